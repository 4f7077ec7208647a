"""Checkpoint retention of a training/align task (`pipeline.stages.<name>.retention`, launcher/plan/retention.py):
which complete `checkpoint-N` folders (jobs/runtime/checkpoints.py) stay, and removing the others safely.

Kept, whatever the settings:
- the newest complete checkpoint: what a requeue resumes from (checkpoints.resume_point);
- every checkpoint an evaluation stage will score and has not scored yet: an interval or final one
  (a `stop` checkpoint, saved on the stop signal, is never scored: jobs/kinds/evaluate.py) without
  `step-<N>.json` in each of the result folders that score this task's checkpoints (`scored_by`:
  sibling evaluation stages, and the evaluation points that share this training, each count).
Kept by the settings: the `keep_last` newest, and per `keep_every_tokens` M the first checkpoint at or
past each multiple of M tokens (k*M <= tokens < (k+1)*M, k >= 1; the lowest step of that range: it is
never removed once kept, so the choice does not move as others go).

Removal renames `checkpoint-N` to `checkpoint-N.removing-<pid>` (atomic; no longer a `checkpoint-N`, so
no scan takes it for a checkpoint), then deletes the renamed folder. A crash in between leaves a
`.removing-` folder, deleted by the next prune. Who prunes: the training task after each checkpoint is
marked and when it ends, and the evaluation task after each score (its training may have ended; never a
training another run computed). Two pruners at once are safe: the rename succeeds once.
Standard library only.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from jobs import layout
from jobs.runtime import checkpoints

ENV = "LAUNCHER_RETENTION"  # the order for a training process (JSON: order() below)
REMOVING = ".removing-"


def kept(found: Sequence[Tuple[int, Dict[str, Any]]], keep_last: Optional[int], keep_every_tokens: Optional[int],
         unscored: Iterable[int] = ()) -> Set[int]:
    """The steps to keep among complete checkpoints `found` as (step, marker info), any order.
    keep_last: the newest N (None: all); keep_every_tokens: tokens M (None: off), from each marker's
    `tokens` (a checkpoint without it counts for none); unscored: steps an evaluation still has to score."""
    steps = sorted(s for s, _ in found)
    if not steps:
        return set()
    if keep_last is None:
        return set(steps)
    keep = {steps[-1], *steps[-keep_last:], *(set(unscored) & set(steps))}
    if keep_every_tokens:
        first: Dict[int, int] = {}
        for step, info in sorted(found, key=lambda f: f[0]):
            tokens = (info or {}).get("tokens")
            if isinstance(tokens, int) and tokens >= keep_every_tokens:
                first.setdefault(tokens // keep_every_tokens, step)
        keep |= set(first.values())
    return keep


def unscored(found: Sequence[Tuple[int, Dict[str, Any]]], scored_dirs: Sequence[Path]) -> Set[int]:
    """Steps some evaluation will still score: not a `stop` checkpoint, and without a result in one of
    `scored_dirs` (each stages/<evaluation>/evals/<point>/ holding step-<N>.json)."""
    return {s for s, info in found if (info or {}).get("reason") != "stop"
            and not all((Path(d) / f"step-{s}.json").is_file() for d in scored_dirs)} if scored_dirs else set()


def remove(path: Path) -> bool:
    """Rename, then delete: False if another pruner took it first."""
    target = path.with_name(f"{path.name}{REMOVING}{os.getpid()}")
    try:
        os.replace(path, target)
    except FileNotFoundError:
        return False
    shutil.rmtree(target, ignore_errors=True)
    return True


def prune(ckpt_dir: Path, policy: Dict[str, Any], scored_dirs: Sequence[Path],
          log: Callable[[str], Any] = lambda _: None) -> List[int]:
    """Remove the complete checkpoints of `ckpt_dir` that `policy` ({keep_last, keep_every_tokens}) does
    not keep; the removed steps. Leftovers of an interrupted removal go too; partial checkpoints
    (no marker) are left for resume_point to set aside."""
    ckpt_dir = Path(ckpt_dir)
    for left in ckpt_dir.glob(f"checkpoint-*{REMOVING}*") if ckpt_dir.is_dir() else ():
        shutil.rmtree(left, ignore_errors=True)
    if not policy or policy.get("keep_last") is None:
        return []
    complete, _ = checkpoints.scan(ckpt_dir)
    found = [(s, layout.read_json(p / checkpoints.MARKER, {}) or {}) for s, p in complete]
    keep = kept(found, policy["keep_last"], policy.get("keep_every_tokens"), unscored(found, scored_dirs))
    removed = [s for s, p in complete if s not in keep and remove(p)]
    if removed:
        log(f"retention: removed checkpoint(s) {removed}; kept {sorted(keep)} (keep_last {policy['keep_last']}"
            f", keep_every_tokens {policy.get('keep_every_tokens')}, newest and unscored always)")
    return removed


def order(spec: Dict[str, Any], stage: str, point: int, run_dir: Path) -> Optional[Dict[str, Any]]:
    """What a pruner of `stage`'s checkpoints at sweep `point` needs, from a stage spec's `retention`
    (launcher/plan/retention.py spec_part): {policy, ckpt_dir, scored_dirs}; None when retention is off or
    the training is another run's (never modified in place)."""
    r = (spec.get("retention") or {}).get(stage)
    if not r or r["policy"][point] is None:
        return None
    run, _, at = layout.located(spec, stage, point)
    if os.path.realpath(run) != os.path.realpath(run_dir):
        return None
    return {"policy": r["policy"][at], "ckpt_dir": str(layout.checkpoint_dir(run, stage, at)),
            "scored_dirs": [str(Path(run) / d) for d in r["scored_by"].get(str(at), [])]}


def prune_by(order_: Optional[Dict[str, Any]], log: Callable[[str], Any] = lambda _: None) -> List[int]:
    """prune() as an order() says; nothing without one."""
    if not order_:
        return []
    return prune(Path(order_["ckpt_dir"]), order_["policy"], [Path(d) for d in order_["scored_dirs"]], log)


def from_env() -> Optional[Dict[str, Any]]:
    """The order a training task put in $LAUNCHER_RETENTION for its trainer processes."""
    raw = os.environ.get(ENV)
    return json.loads(raw) if raw else None
