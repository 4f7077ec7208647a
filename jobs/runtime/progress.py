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
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict, Optional

from jobs import layout

# How often a writer rewrites the file by default (s): the hang watchdog's watchdog.stall_s must be longer.
WRITE_INTERVAL_S = 5.0

FIELDS = ("step", "total_steps", "tokens", "tokens_per_s", "loss", "last_checkpoint", "time", "started", "rank")


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


def read_progress(path: Path) -> Optional[Dict[str, Any]]:
    """The last progress record of a task, or None when it wrote none (or the file is unreadable)."""
    try:
        rec = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def eta_s(rec: Dict[str, Any], now: Optional[float] = None) -> Optional[float]:
    """Seconds left at the average rate since `started`: (total-step) * elapsed/step; None when the
    record lacks step/total_steps or no step was made yet."""
    step, total, started = rec.get("step"), rec.get("total_steps"), rec.get("started")
    if not step or not total or started is None:
        return None
    elapsed = (rec.get("time") if now is None else now) - started
    if elapsed <= 0:
        return None
    return max(0.0, (total - step) * elapsed / step)
