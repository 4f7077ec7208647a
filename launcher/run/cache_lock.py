"""The cache lock: one launcher at a time looks up a run root's (and the team `cache_dir`'s) content
keys and submits what it did not find, so two identical `launcher run` started at once compute each
key once (the second finds the first's points in flight: launcher/run/inflight.py).

Held from the cache lookup (launcher/run/cache.py apply) until the ledger records the submission
(launcher/run/submit.py), a few seconds at most. `<dir>/.cache.lock` is a filelock (fcntl, released when
the process ends, even killed); `<dir>/.cache.lock.holder` says who holds it (pid, host, since, the
command) for the timeout's message. Login node only.

Why a lock and not Slurm `--dependency=singleton`: singleton keys on the job name and the user only,
so it cannot say "the same content key" across runs of different pipelines or users of a team cache,
and it serialises the two jobs (the second still computes) instead of sharing one output.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator, Optional, Sequence

from filelock import FileLock, Timeout

from launcher.errors import LauncherError

LOCK_NAME = ".cache.lock"
TIMEOUT_S = 120.0  # a lookup plus a submission of thousands of tasks takes seconds; this is a stuck holder


def holder(directory: Path) -> Optional[dict]:
    """Who holds (or last held, if it was killed) the cache lock of `directory`: {pid, host, since, argv}."""
    try:
        return json.loads((Path(directory) / f"{LOCK_NAME}.holder").read_text())
    except (OSError, ValueError):
        return None


def _acquire(directory: Path, timeout_s: float) -> FileLock:
    lock = FileLock(str(directory / LOCK_NAME))
    try:
        lock.acquire(timeout=timeout_s)
    except Timeout as e:
        who = holder(directory) or {}
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(who["since"])) if who.get("since") else "?"
        raise LauncherError(
            f"the cache lock {directory / LOCK_NAME} is held by pid {who.get('pid', '?')} on host "
            f"{who.get('host', '?')} (since {since}: {' '.join(who.get('argv') or []) or '?'}) for over "
            f"{timeout_s:.0f} s: another launcher is looking up or submitting content keys there. Nothing was "
            f"submitted; run again once it is done (or end that process if it hangs).") from e
    record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(), "argv": sys.argv}
    try:
        (directory / f"{LOCK_NAME}.holder").write_text(json.dumps(record))
    except OSError:
        pass  # only the timeout's message reads it
    return lock


@contextmanager
def held(directories: Sequence[Path], timeout_s: float = TIMEOUT_S) -> Iterator[None]:
    """The cache lock of each directory (the run root, then the team cache_dir), in that order, so two
    launchers of different run roots sharing one cache_dir never wait on each other in a cycle.
    LauncherError naming the holder (pid, host, since, command) after `timeout_s`."""
    seen, ordered = set(), []
    for d in directories:
        real = os.path.realpath(d)
        if real not in seen:
            seen.add(real)
            ordered.append(Path(d))
    with ExitStack() as stack:
        for d in ordered:
            stack.callback(_release, d, _acquire(d, timeout_s))
        yield


def _release(directory: Path, lock: FileLock) -> None:
    """Release; in a folder that holds nothing else (no run was written: bad input), remove the lock's
    files first, so a refused command leaves the run root as it found it. A launcher that was waiting
    then holds a lock on the removed file while a third may lock a new one: at worst those two both
    compute a key, as without the lock; no run exists there yet for either to find."""
    try:
        if {p.name for p in directory.iterdir()} <= {LOCK_NAME, f"{LOCK_NAME}.holder"}:
            (directory / f"{LOCK_NAME}.holder").unlink(missing_ok=True)
            (directory / LOCK_NAME).unlink(missing_ok=True)
    except OSError:
        pass
    lock.release()
