"""The exponential moving average of a Trainer's weights, as the stages that keep one configure it
(`train.ema` of pretrain with backend hf, `align.ema`): its config section and the check every such stage
makes. The node side is jobs/adapters/ema.py (torch's AveragedModel); an evaluation scores each
checkpoint's `ema/` beside its raw weights (jobs/kinds/evaluate.py)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional


@dataclass
class Ema:
    """An exponential moving average of the weights (jobs/adapters/ema.py): saved beside each checkpoint
    (checkpoint-N/ema/) and the output (ema/)."""

    decay: Optional[float] = None  # null: off; e.g. 0.99 (ema = decay * ema + (1 - decay) * weights, per step)


def check_decay(decay: Any, key: str, bad: Callable[[str, str], None]) -> bool:
    """`decay` is null (off) or a number in (0, 1); else bad(key, message). True when it is on and valid."""
    if decay is None:
        return False
    if isinstance(decay, bool) or not (isinstance(decay, (int, float)) and 0 < decay < 1):
        bad(key, f"must be a number in (0, 1) or null, got {decay}")
        return False
    return True
