"""Child process trees of a task (a command, torchrun, accelerate, a server): started in a session of
their own, signalled as a whole, stopped with a grace and nothing of them left. Standard library only.

- Own session (setsid): one killpg reaches the child and everything it starts that stays in its
  session; the task's own signals (Slurm's, the local scheduler's) do not reach it except as forwarded.
- Dies with its parent (optional, PR_SET_PDEATHSIG, prctl(2)): the kernel sends SIGTERM to the child
  when the thread that started it ends, so a SIGKILLed task leaves no server behind.
- stop(): SIGTERM to the session's process group, up to `grace` seconds for every process of the
  session to be gone (read from /proc: the leader may exit before its children), then SIGKILL.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

from jobs.runtime import polling

KILL_WAIT_S = 10  # after SIGKILL: how long the kernel may take to end the session's processes
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _own_session_dying_with_parent() -> None:  # preexec_fn: runs in the child, before exec
    os.setsid()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def start(argv: Sequence[str], env: Optional[Mapping[str, str]] = None, *, die_with_parent: bool = False,
          **popen: object) -> subprocess.Popen:
    """Start argv in a session of its own (its pid = its session and process group id). die_with_parent:
    it gets SIGTERM when the starting thread ends (start it from a thread that outlives it)."""
    if die_with_parent:
        return subprocess.Popen(list(argv), env=None if env is None else dict(env),
                                preexec_fn=_own_session_dying_with_parent, **popen)
    return subprocess.Popen(list(argv), env=None if env is None else dict(env), start_new_session=True, **popen)


def tee_lines(stream, on_line: Callable[[str], object], sink=None) -> threading.Thread:
    """Copy a child's output pipe (`stream`, binary) to `sink` (binary; default this process's stdout,
    i.e. the task's log) line by line, and hand each line (text, undecodable bytes replaced) to
    `on_line`. A daemon thread; it ends at the pipe's EOF. An exception in `on_line` is printed once
    and the copying goes on: a reader that stopped would leave the child blocked on a full pipe."""
    out = sink or sys.stdout.buffer

    def pump() -> None:
        failed = False
        for raw in iter(stream.readline, b""):
            try:
                out.write(raw)
                out.flush()
            except (OSError, ValueError):
                pass
            if not failed:
                try:
                    on_line(raw.decode("utf-8", "replace"))
                except Exception as e:  # noqa: BLE001 - advisory reader, never the child's problem
                    failed = True
                    print(f"output reader: {e!r}; the child's lines are copied, no longer read", flush=True)
        stream.close()

    t = threading.Thread(target=pump, name="tee-lines", daemon=True)
    t.start()
    return t


def session_pids(sid: int) -> list[int]:
    """Live (not zombie) processes of session `sid`, from /proc."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[3]) == sid and fields[0] != "Z":  # fields: state ppid pgrp session ...
                pids.append(int(d.name))
    return pids


def session_alive(sid: int) -> bool:
    return bool(session_pids(sid))


def signal_tree(proc: subprocess.Popen, signum: int) -> bool:
    """Send signum to the child's process group while its leader runs; False when it has exited."""
    if proc.poll() is not None:
        return False
    try:
        os.killpg(proc.pid, signum)
    except ProcessLookupError:
        return False
    return True


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL the child's whole process group now (the leader may be gone, its group not)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _gone(proc: subprocess.Popen) -> Callable[[], bool]:
    def check() -> bool:
        proc.poll()  # reap the leader so that its pid stops counting
        return not session_alive(proc.pid)

    return check


def stop(proc: subprocess.Popen, grace: float, log: Optional[Callable[[str], None]] = None,
         what: str = "the child") -> bool:
    """SIGTERM to the child's session, SIGKILL after `grace` seconds if any process of it is still
    alive; True when nothing of the session is left (checked in /proc), False if something outlived
    SIGKILL by KILL_WAIT_S (a process in uninterruptible sleep)."""
    if session_alive(proc.pid):
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:  # only zombies left
            pass
        if not polling.until(_gone(proc), grace, 0.2):
            if log:
                log(f"{what} did not stop within {grace:g} s of SIGTERM: SIGKILL")
            kill(proc)
            polling.until(_gone(proc), KILL_WAIT_S, 0.2)
    proc.poll()
    return not session_alive(proc.pid)
