"""nanotron's live progress, read from its log lines (standard library only).

nanotron has no callback API: its DistributedTrainer only has methods a subclass may override
(pre_training, post_train_step, ...), and the stage runs the user's run_train.py (train.run_train),
which builds a plain DistributedTrainer. So the task reads what nanotron prints instead: torchrun's
stdout is piped through the task (Task.run_child(on_line=...)), copied to the task's log unchanged,
and each line is offered to NanotronProgress.feed. The line is the one nanotron's LoggerWriter
(nanotron/logging/base.py, add_scalars_from_list) prints on its logging ranks every
logging.iteration_step_info_interval steps:

    <date> <time> [INFO|DP=0|PP=0|TP=0|node]: iteration: 12 / 100 | consumed_tokens: 49.2K | ...
        | tokens_per_sec: 3.1K | ... | lm_loss: 9.87 | lr: 0.0003 | ...

Numbers there are human-formatted (3 significant digits, K/M/B/T suffixes), so step and total come
from the line and tokens from step x the schedule's exact tokens per step; loss is lm_loss. A
checkpoint is reported when latest.txt of the checkpoints folder names a complete step
(jobs.adapters.nanotron.complete_steps, passed in), checked on each iteration line. On a multi-node job every
node reads its own output; only the node of nanotron's logging rank sees these lines, so one writes.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from jobs.runtime.progress import StepProgress

_ITERATION = re.compile(r"iteration: (\d+) / (\d+)")
_ITEM = re.compile(r"\|\s*([A-Za-z_][\w/.\-]*): ([^|]+?)\s*(?=\||$)")
_SUFFIX = {"": 1, "K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}


def human_number(text: str) -> Optional[float]:
    """A number as nanotron's human_format prints it ('9.87', '49.2K', '1.05M', '3.1e-05'); None if not one."""
    m = re.fullmatch(r"\s*(-?[\d.]+(?:e[-+]?\d+)?)([KMBTPE]?)\s*", text)
    if not m:
        return None
    try:
        return float(m.group(1)) * _SUFFIX[m.group(2)]
    except ValueError:
        return None


def parse_line(line: str) -> Optional[Dict[str, Any]]:
    """{"step", "total_steps", "loss"?, "tokens_per_s"?} of a LoggerWriter iteration line, else None."""
    m = _ITERATION.search(line)
    if not m:
        return None
    out: Dict[str, Any] = {"step": int(m.group(1)), "total_steps": int(m.group(2))}
    items = {k: v for k, v in _ITEM.findall(line[m.end():])}
    for key, field in (("lm_loss", "loss"), ("tokens_per_sec", "tokens_per_s")):
        value = human_number(items.get(key, ""))
        if value is not None:
            out[field] = value
    return out


class NanotronProgress:
    """feed(line) for every line nanotron prints; writes the task's progress file (jobs/runtime/progress.py)."""

    def __init__(self, path: Path, tokens_per_step: int, checkpoints: Path,
                 complete_steps: Callable[[Path], List[int]], total_steps: Optional[int] = None,
                 first_step: int = 0, min_interval_s: Optional[float] = None, rank: int = 0):
        self.progress = StepProgress(path, total_steps=total_steps, min_interval_s=min_interval_s, rank=rank)
        self.tokens_per_step = int(tokens_per_step)
        self.checkpoints = Path(checkpoints)
        self.complete_steps = complete_steps  # jobs.adapters.nanotron.complete_steps: the steps saved whole
        self.first_step = first_step
        self.started = False
        self.checkpoint: Optional[int] = None

    def feed(self, line: str) -> None:
        rec = parse_line(line)
        if rec is None:
            return
        step = rec["step"]
        if not self.started:  # the first line this attempt: ETA counts from the resumed step
            self.progress.start(self.first_step, self.first_step * self.tokens_per_step, rec["total_steps"])
            self.started = True
        if "loss" in rec:
            self.progress.writer.record["loss"] = rec["loss"]
        self.progress.step(step, step * self.tokens_per_step)
        self._check_checkpoint()

    def _check_checkpoint(self) -> None:
        try:
            latest = int((self.checkpoints / "latest.txt").read_text().strip())
        except (OSError, ValueError):
            return
        if latest != self.checkpoint and latest in self.complete_steps(self.checkpoints):
            self.checkpoint = latest
            self.progress.checkpoint(str(self.checkpoints / str(latest)))
