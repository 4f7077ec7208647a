"""Python stacks of a task's ranks, for the hang watchdog. Standard library only.

Each rank registers faulthandler on DUMP_SIGNAL (register_dump(): jobs/runtime/rankmain.py does it
for torchrun's workers, jobs/adapters/trl.py for accelerate's); the watchdog then sends that signal to
every process of the task's child tree that catches it (read from /proc/<pid>/status SigCgt, so that a
process that did not register — torchrun's agent, a shell — is never killed by a signal it does not
handle). faulthandler writes every thread's Python stack from its C signal handler, so a rank blocked
inside a collective (in C, holding no GIL-released Python frame) still prints where it waits. Output
goes to the rank's stderr: the task log. py-spy would need no registration, but it is not in the stage
environments (docs/watchdog.md)."""
from __future__ import annotations

import faulthandler
import os
import signal
import sys
import time
from pathlib import Path
from typing import Callable, List

DUMP_SIGNAL = signal.SIGUSR1  # launcher/plan/watchdog.py DUMP_SIGNAL: the stop signal may not be this one


def register_dump(signum: int = DUMP_SIGNAL) -> None:
    """This process prints every thread's Python stack to stderr on `signum`, and goes on running."""
    faulthandler.register(signum, file=sys.stderr, all_threads=True, chain=False)


def _stat(pid: int) -> List[str]:
    """Fields of /proc/<pid>/stat after the command name: state ppid pgrp session ..."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def descendants(root: int) -> List[int]:
    """Live processes below `root` (children, their children, ...), from /proc, parents first."""
    children: dict[int, List[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = _stat(int(d.name))
            except (OSError, IndexError):
                continue
            if fields[0] != "Z":
                children.setdefault(int(fields[1]), []).append(int(d.name))
    out, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop(0)
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def catches(pid: int, signum: int = DUMP_SIGNAL) -> bool:
    """Process `pid` has a handler for `signum` (SigCgt of /proc/<pid>/status); False when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    except (OSError, ValueError):
        pass
    return False


def dump_tree(root: int, log: Callable[[str], None], wait_s: float = 0.5) -> List[int]:
    """Ask every process under (and including) `root` that registered register_dump() for its stacks,
    one at a time, `wait_s` seconds apart (the ranks share the log: asked together, their lines
    interleave). Returns the pids asked."""
    asked = [pid for pid in [root] + descendants(root) if catches(pid)]
    if not asked:
        log("watchdog: no process of the task registered a stack dump (faulthandler): no stacks")
        return []
    log(f"watchdog: Python stacks of {len(asked)} process(es) {asked} follow in this log (faulthandler, "
        f"{DUMP_SIGNAL.name})")
    for pid in asked:
        try:
            os.kill(pid, DUMP_SIGNAL)
        except ProcessLookupError:
            continue
        time.sleep(wait_s)
    return asked


def dump_self(log: Callable[[str], None]) -> None:
    """Work that runs in this process (no child tree): every thread's stack, now, to stderr."""
    log("watchdog: Python stacks of this process follow")
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)


def kill_sessions(pids: List[int]) -> None:
    """SIGKILL each pid's process group (torchrun starts every worker in a session of its own, so its
    data-loader workers go with it), then the pid itself."""
    for pid in pids:
        for kill in (os.killpg, os.kill):
            try:
                kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
