"""The hang watchdog's clock: a thread that reads a task's live progress file (jobs/runtime/progress.py)
and calls back when it stops advancing. What is then done (stacks, kills, requeue) is the caller's
(jobs/task.py). Standard library only.

Counting: an attempt starts when the watchdog is armed (the task's start, or an in-job restart). Until
the first progress record written in this attempt (`time` at or after the arming; a record of an
earlier attempt does not count) the task has `startup_s` (imports, loading, rendezvous); after it,
`stall_s` from the newest record's `time`; none once it says the last step is done (step >= total_steps:
the final save and the launcher's shutdown write no progress). The record's time is the writing node's clock: on several
nodes, their skew adds to the stall (keep stall_s well above it)."""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from jobs.runtime.progress import read_progress


def verdict(rec: Optional[Dict[str, Any]], armed: float, now: float, stall_s: float,
            startup_s: float) -> Optional[str]:
    """Why the task looks hung at `now` (Unix s), or None while it does not. rec: the progress record
    (None: no file yet); armed: when this attempt started (Unix s)."""
    t = rec.get("time") if isinstance(rec, dict) else None
    if not isinstance(t, (int, float)) or t < armed:
        if now - armed > startup_s:
            return (f"no progress written {now - armed:.0f} s after the start of this attempt "
                    f"(watchdog.startup_s={startup_s:g})")
        return None
    if isinstance(rec.get("step"), int) and isinstance(rec.get("total_steps"), int) and rec["step"] >= rec["total_steps"]:
        return None  # the last step is done: saving and shutting down write no progress
    if now - t > stall_s:
        step = f" at step {rec['step']}" if rec.get("step") is not None else ""
        return f"no progress for {now - t:.0f} s{step} (watchdog.stall_s={stall_s:g})"
    return None


class Watchdog:
    """Polls `progress_file` every `poll_s` seconds (default: a quarter of stall_s, at most 5 s) in a
    daemon thread; on a verdict calls on_stall(reason). on_stall returns True to go on watching (it
    restarted the work in the job: the clock is re-armed, startup_s again) or False to stop watching."""

    def __init__(self, progress_file: Path, stall_s: float, startup_s: float,
                 on_stall: Callable[[str], bool], poll_s: Optional[float] = None, clock=time.time):
        self.progress_file, self.stall_s, self.startup_s = Path(progress_file), float(stall_s), float(startup_s)
        self.on_stall, self._clock = on_stall, clock
        self.poll_s = poll_s if poll_s is not None else min(5.0, self.stall_s / 4)
        self.armed = clock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="hang-watchdog", daemon=True)

    def start(self) -> "Watchdog":
        self.armed = self._clock()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            why = verdict(read_progress(self.progress_file), self.armed, self._clock(), self.stall_s, self.startup_s)
            if why is None:
                continue
            if self._stop.is_set() or not self.on_stall(why):
                return
            self.armed = self._clock()
