"""Across runs: a stage point whose content key another run under the same run root has completed is
not computed again. The new run references that output read-only (plan.json `cached`, spec.json
`cached_outputs`; jobs/layout.py `located`), and `status` shows it as cached.

Only completed work counts: every task of the point has its completion marker in that run (a run
still writing an output has no marker for it yet). Serving, publishing, a server's clients, stages
with `cache: false` and the stages `--rerun` names (and every stage after them) are always computed.
Login node only: reads plan.json files and lists marker folders, writes nothing.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Iterable, Optional, Sequence, Set, Tuple

from jobs import layout

from launcher import keys
from launcher.errors import ConfigError, ConfigErrors
from launcher.plan import Plan, StagePlan

Source = Dict[str, object]  # {"run": run dir, "point": its point there, "hash": its stage hash there}


def completed(run_root: Path, skip: Optional[Path] = None) -> Dict[Tuple[str, str], Source]:
    """{(stage, key): where its completed output is} over the runs under `run_root` (not `skip`),
    oldest run first so the first run that computed a key stays its source; a point a run took from
    the cache points to the run that computed it."""
    found: Dict[Tuple[str, str], Source] = {}
    try:
        runs = sorted(d for d in Path(run_root).iterdir() if (d / "plan.json").is_file() and (d / "run.json").is_file())
    except FileNotFoundError:
        return found
    for run_dir in runs:
        if skip is not None and os.path.realpath(run_dir) == os.path.realpath(skip):
            continue
        try:
            plan = Plan.from_json(json.loads((run_dir / "plan.json").read_text()))
        except (OSError, ValueError, TypeError, KeyError):
            continue  # a plan of another version, torn or foreign: not a source
        for name, stage in plan.stages.items():
            for key, source in _completed_points(run_dir, stage):
                found.setdefault((name, key), source)
    return found


def _completed_points(run_dir: Path, stage: StagePlan) -> Iterable[Tuple[str, Source]]:
    if not stage.keys:
        return
    done = layout.markers(run_dir, stage.name, stage.hash).done
    for point in sorted({stage.point_of(p) for p in range(stage.points)}):
        if str(point) in stage.cached:
            yield stage.keys[point], stage.cached[str(point)]
        elif all(t in done for t in range(point * stage.tasks_per_point, (point + 1) * stage.tasks_per_point)):
            yield stage.keys[point], {"run": str(run_dir), "point": point, "hash": stage.hash}


def forced(plan: Plan, rerun: Sequence[str]) -> Set[str]:
    """The stages `--rerun` names and every stage after them. ConfigErrors naming `--rerun` for a
    stage the plan does not have."""
    names = [plan.aliases.get(n, n) for n in rerun]
    unknown = [n for n, m in zip(rerun, names) if m not in plan.stages]
    if unknown:
        raise ConfigErrors([ConfigError(f"names no stage of the plan: {', '.join(unknown)} (stages: "
                                        f"{', '.join(plan.stages)})", key="--rerun")])
    out = set(names)
    for name, stage in plan.stages.items():  # topological order: parents first
        if any(d.parent in out for d in stage.deps):
            out.add(name)
    return out


def apply(plan: Plan, run_root: Path, rerun: Sequence[str] = (), skip: Optional[Path] = None) -> None:
    """Mark the points whose output is complete in another run (StagePlan.cached), and make every
    aftercorr edge on a parent with cached points wait on the whole parent array (its cached tasks are
    not in it: Slurm pairs array indices). Modifies the plan in place."""
    force = forced(plan, rerun)
    index = None
    for name, stage in plan.stages.items():
        if name in force or not stage.cache or not stage.keys or not keys.shares(plan, stage):
            continue
        index = completed(run_root, skip) if index is None else index
        for point in sorted({stage.point_of(p) for p in range(stage.points)}):
            source = index.get((name, stage.keys[point]))
            if source is not None:
                stage.cached[str(point)] = source
    for stage in plan.stages.values():
        for d in stage.deps:
            if d.kind == "aftercorr" and plan.stages[d.parent].cached:
                d.kind, d.note = "afterok", "cached"
