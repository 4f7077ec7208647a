"""Live progress of a running task: one small JSON file per array task, rewritten atomically at most
every `min_interval_s` seconds. Standard library and jobs.layout only.

The file is the contract between a training task (writer: the hf Trainer / TRL / nanotron adapters),
`launcher status` (reader, login node) and the hang watchdog (reader, on the node): a task that makes
progress rewrites it; its `time` stops advancing when the task hangs.

Path: jobs.layout.progress_path(run_dir, stage, task) = <run>/stages/<stage>/progress/<task>.json
Fields (all optional but `time`):
  step          int, optimizer steps done (global, counting from 0 at the start of training)
  total_steps   int, steps the task will run (max_steps)
  tokens        int, tokens consumed so far (all ranks)
  tokens_per_s  float, tokens/s over the last interval (all ranks)
  loss          float, the last logged training loss
  last_checkpoint  str, path of the newest complete checkpoint
  time          float, Unix time (s) of this write
  started       float, Unix time (s) the writer was created (this attempt)
  rank          int, the writing rank (only rank 0 writes by default)
  first_step    int, the step this attempt started from (a resumed run: its checkpoint's step), so the
                ETA counts only the steps this attempt made in its elapsed time

Writers: the hf and TRL trainers through jobs/adapters/trainer_progress.py (a transformers
TrainerCallback), nanotron through its log lines (jobs/adapters/nanotron_progress.py). The throttle is
$LAUNCHER_PROGRESS_INTERVAL_S seconds (default 5); the last step and every checkpoint are always written.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Dict, Optional

from jobs import layout

FIELDS = ("step", "total_steps", "tokens", "tokens_per_s", "loss", "last_checkpoint", "time", "started", "rank",
          "first_step")
INTERVAL_ENV = "LAUNCHER_PROGRESS_INTERVAL_S"
DEFAULT_INTERVAL_S = 5.0


def interval_s() -> float:
    """The writers' throttle in seconds: $LAUNCHER_PROGRESS_INTERVAL_S, else 5 (a bad value: 5)."""
    try:
        value = float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL_S))
    except ValueError:
        return DEFAULT_INTERVAL_S
    return value if value >= 0 else DEFAULT_INTERVAL_S
# The hang watchdog's watchdog.stall_s must be longer than the writers' default interval (s).
WRITE_INTERVAL_S = DEFAULT_INTERVAL_S


class ProgressWriter:
    """Throttled atomic writer of one task's progress file.

    update(**fields) merges `fields` into the record and writes it when `min_interval_s` (seconds)
    passed since the last write, or when force=True (the last step, a checkpoint). Unknown field names
    raise ValueError (a typo would otherwise be a silent gap in `status`). Write errors (a full or
    read-only filesystem) are swallowed after the first warning: progress is advisory, the work is not.
    """

    def __init__(self, path: Path, min_interval_s: float = WRITE_INTERVAL_S, clock=time.time):
        self.path = Path(path)
        self.min_interval_s = float(min_interval_s)
        self._clock = clock
        self._last_write = float("-inf")
        self._failed = False
        self.record: Dict[str, Any] = {"started": clock()}

    def update(self, force: bool = False, **fields: Any) -> bool:
        """Merge fields; write if due. Returns whether the file was written."""
        unknown = set(fields) - set(FIELDS)
        if unknown:
            raise ValueError(f"unknown progress field(s) {sorted(unknown)}; known: {', '.join(FIELDS)}")
        self.record.update({k: v for k, v in fields.items() if v is not None})
        now = self._clock()
        if not force and now - self._last_write < self.min_interval_s:
            return False
        self.record["time"] = now
        try:
            layout.atomic_write_json(self.path, self.record)
        except OSError as e:
            if not self._failed:
                print(f"progress: cannot write {self.path}: {e} (progress stays unreported)", flush=True)
            self._failed = True
            return False
        self._last_write = now
        return True


class StepProgress:
    """What a training loop reports, on top of a ProgressWriter: the step and token counters, tokens/s
    over the interval since the last write (all ranks: `tokens` is the global count), the loss.

    step(): after each optimizer step (written when due; force on the last step). checkpoint(): after
    a checkpoint is complete (always written). loss(): the last logged loss (written when due)."""

    def __init__(self, path: Path, total_steps: Optional[int] = None, min_interval_s: Optional[float] = None,
                 clock=time.time, rank: int = 0):
        self.writer = ProgressWriter(path, interval_s() if min_interval_s is None else min_interval_s, clock)
        self._clock = clock
        self._mark: Optional[tuple] = None  # (time, tokens) of the last write: the rate's interval
        self.writer.record.update({"rank": rank, **({"total_steps": int(total_steps)} if total_steps else {})})

    def start(self, step: int, tokens: Optional[int] = None, total_steps: Optional[int] = None) -> bool:
        """Training (this attempt) begins at `step` (0, or the resumed checkpoint's step): written now."""
        self.writer.record.update(first_step=int(step), started=self._clock())
        self._mark = (self._clock(), tokens)
        return self.writer.update(force=True, step=int(step), tokens=tokens, total_steps=total_steps)

    def step(self, step: int, tokens: Optional[int] = None, force: bool = False) -> bool:
        total = self.writer.record.get("total_steps")
        force = force or (total is not None and step >= total)
        rate = self._rate(tokens)
        written = self.writer.update(force=force, step=int(step), tokens=tokens, tokens_per_s=rate)
        if written and rate is not None:
            self._mark = (self.writer.record["time"], tokens)
        return written

    def loss(self, value: Optional[float]) -> bool:
        return self.writer.update(loss=None if value is None else float(value))

    def checkpoint(self, path: str, step: Optional[int] = None) -> bool:
        return self.writer.update(force=True, last_checkpoint=str(path), step=step)

    def _rate(self, tokens: Optional[int]) -> Optional[float]:
        """Tokens/s since the last write that had new tokens; None (the last rate stays) when no token
        was added since (a second write of the same step: a checkpoint, the end)."""
        if tokens is None or self._mark is None or self._mark[1] is None or tokens <= self._mark[1]:
            return None
        dt = self._clock() - self._mark[0]
        return round((tokens - self._mark[1]) / dt, 1) if dt > 0 else None


def read_progress(path: Path) -> Optional[Dict[str, Any]]:
    """The last progress record of a task, or None when it wrote none (or the file is unreadable)."""
    try:
        rec = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def eta_s(rec: Dict[str, Any], now: Optional[float] = None) -> Optional[float]:
    """Seconds left at the average rate of this attempt: (total - step) * elapsed / (step - first_step),
    elapsed since `started` (first_step 0 when absent); None when the record lacks step/total_steps or
    this attempt made no step yet."""
    step, total, started = rec.get("step"), rec.get("total_steps"), rec.get("started")
    done = (step or 0) - (rec.get("first_step") or 0)
    if not step or not total or started is None or done <= 0:
        return None
    elapsed = (rec.get("time") if now is None else now) - started
    if elapsed <= 0:
        return None
    return max(0.0, (total - step) * elapsed / done)


def summary(rec: Optional[Dict[str, Any]], now: Optional[float] = None) -> Optional[Dict[str, Any]]:
    """What a status line shows of a record (None without one): step, total_steps, tokens,
    tokens_per_s, loss, last_checkpoint, eta_s (at this attempt's rate, counted from the last write:
    eta_s(rec) less the time since) and age_s (seconds since the last write: a hang shows as a growing
    age). `now`: Unix time (default time.time())."""
    if not rec or "time" not in rec:
        return None
    now = time.time() if now is None else now
    eta = eta_s(rec)
    age = max(0.0, now - rec["time"])
    out = {k: rec.get(k) for k in ("step", "total_steps", "tokens", "tokens_per_s", "loss", "last_checkpoint")}
    return {**out, "eta_s": None if eta is None else max(0.0, eta - age), "age_s": round(age, 1)}
