"""Reward functions for the demo's GRPO/RLOO stages (align.rewards: {callable: "jobs.demo.rewards:brevity"}).
TRL calls each with the batch's prompts and completions (and completion_ids, the data's other columns)
as keywords and takes one float per completion. Standard library only."""
from __future__ import annotations

from typing import Any, List


def text_of(completion: Any) -> str:
    """A completion's text: a string, or (chat prompts) a list of messages whose contents are joined."""
    if isinstance(completion, str):
        return completion
    return "".join(m.get("content") or "" for m in completion if isinstance(m, dict) and isinstance(m.get("content"), str))


def brevity(completions: List[Any], **_: Any) -> List[float]:
    """1 for an empty completion down to 0 for one of 256 characters or more. Easy to improve even from
    a random model that never ends early: completions of the same number of tokens differ in characters,
    so preferring short tokens (and ending sooner) pays."""
    return [max(0.0, 1.0 - len(text_of(c)) / 256) for c in completions]
