"""Checkpoint retention settings (`pipeline.stages.<name>.retention`, launcher/config/schema.py Retention): checked
at plan time, handed to the tasks in their payload (so the stage hash and the content key cover them: a
run that prunes is never the cache source of one that keeps everything), and, in the stage specs, which
evaluation result folders score each training point (`scored_by`). The pruning runs on the node
(jobs/runtime/retention.py). Pure: plain config dicts or the plan in, errors or spec parts out."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from launcher import kinds
from launcher.errors import ConfigError


def check(name: str, st: Dict[str, Any], errors: List[ConfigError]) -> None:
    """Append a ConfigError per bad retention setting of stage `name`: keep_last or keep_every_tokens not
    a positive integer, or set on a kind that writes no prunable checkpoints."""
    r, key = st.get("retention") or {}, f"pipeline.stages.{name}.retention"
    if r.get("keep_last") is None and r.get("keep_every_tokens") is None:
        return
    for k, what in (("keep_last", "how many of the newest checkpoints to keep; the newest always stays: a requeue "
                                  "resumes from it"),
                    ("keep_every_tokens", "also keep the first checkpoint at or past each multiple of this many "
                                          "tokens")):
        v = r.get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            errors.append(ConfigError(f"must be a positive integer or null, got {v!r} ({what})", stage=name,
                                      key=f"{key}.{k}"))
    kind = kinds.get(st["kind"]) if st["kind"] in kinds.names() else None
    if kind is not None and not kind.retains_checkpoints(st):
        able = "kind=pretrain with train.backend=hf, kind=align"
        errors.append(ConfigError(f"kind={st['kind']} (as configured) writes no Trainer checkpoints to prune; "
                                  f"retention applies to {able} (set it to null)",
                                  stage=name, key=key))


def payload(st: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The retention part of a task's payload, or None when it is off (then nothing is added, and the
    stage's hash stays what it was before retention existed). keep_every_tokens alone keeps the newest."""
    r = st.get("retention") or {}
    if r.get("keep_last") is None and r.get("keep_every_tokens") is None:
        return None
    return {"keep_last": r["keep_last"] if r.get("keep_last") is not None else 1,
            "keep_every_tokens": r.get("keep_every_tokens")}


def scored_by(plan, stage) -> Dict[str, List[str]]:
    """{training point (text): result folders, relative to the run directory, that score its checkpoints}:
    every evaluation stage after `stage` (siblings each count), at every point this run computes whose
    training is `stage`'s point (points sharing a training each score it unless they share the evaluation
    too). An evaluation point another run computed reads that run's training, not this one."""
    found: Dict[str, List[str]] = {}
    for child in plan.stages.values():
        if not kinds.get(child.kind).scores_checkpoints or not child.deps or child.deps[0].parent != stage.name:
            continue
        for q in range(child.points):
            if child.point_of(q) != q or str(q) in child.cached:
                continue
            found.setdefault(str(stage.point_of(q)), []).append(f"stages/{child.name}/evals/{q}")
    return found


def spec_part(plan, stage) -> Optional[Dict[str, Any]]:
    """spec.json `retention` for a task of `stage`: {training stage: {policy: per point, scored_by}} for
    the stage itself (a training) or its parent (an evaluation prunes after scoring); None if off."""
    scorer = kinds.get(stage.kind).scores_checkpoints and stage.deps
    names = [stage.name] + ([stage.deps[0].parent] if scorer else [])
    out = {}
    for name in names:
        s = plan.stages[name]
        policy = [p.get("retention") for p in s.payloads]
        if any(policy):
            out[name] = {"policy": policy, "scored_by": scored_by(plan, s)}
    return out or None
