"""Across runs: a stage point whose content key another run under the same run root has completed is
not computed again. The new run references that output read-only (plan.json `cached`, spec.json
`cached_outputs`; jobs/layout.py `located`), and `status` shows it as cached.

Completed work counts: every task of the point has its completion marker in that run. A point another
run is computing now (in flight: launcher/run/inflight.py) is referenced too, and the stages after it
wait on its jobs; any other partial output (a failed or cancelled task) is not. Serving, publishing,
a server's clients, stages with `cache: false` and the stages `--rerun` names (and every stage after
them) are always computed. The runs looked at: those under the run root, then those linked in the
profile's team cache_dir (launcher/plan/team_cache.py).
Login node only: reads plan.json files, ledgers and marker folders, and asks the scheduler once about
the candidates in flight (once per run on the local scheduler); writes nothing. The caller holds the
cache lock (launcher/run/cache_lock.py) from here until the ledger records the submission.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

from jobs import layout

from launcher.run import cache_index, inflight
from launcher.plan import keys
from launcher.errors import ConfigError, ConfigErrors
from launcher.plan.model import Plan, StagePlan

# {"run": run dir, "point": its point there, "hash": its stage hash there, "tasks": [first, end) of its
# global tasks there; in flight also "jobs": {job id: [array indices]} it waits on}
Source = Dict[str, object]


def run_dirs(roots: Sequence[Path], skip: Optional[Path] = None) -> List[Tuple[Path, Path]]:
    """(root, run) for the runs under each root (a run root, then the team cache_dir, whose entries
    link to runs), each run once (by real path), oldest first within a root; not `skip`."""
    seen = {os.path.realpath(skip)} if skip is not None else set()
    out = []
    for root in roots:
        try:
            runs = sorted(d for d in Path(root).iterdir() if (d / "plan.json").is_file() and (d / "run.json").is_file())
        except (FileNotFoundError, NotADirectoryError):
            continue
        for d in runs:
            real = os.path.realpath(d)
            if real not in seen:
                seen.add(real)
                out.append((Path(root), Path(real)))
    return out


def completed(run_root: Path, skip: Optional[Path] = None, cluster: Optional[dict] = None,
              roots: Sequence[Path] = ()) -> Dict[Tuple[str, str], Source]:
    """{(stage, key): where its completed output is} over the runs under `run_root` and `roots` (not
    `skip`), oldest run first so the first run that computed a key stays its source; a point a run took
    from the cache points to the run that computed it. With `cluster`, a key no run has completed but
    a run of that cluster is computing now maps to that run's point with its `jobs` (in flight).
    A run that had completed everything when last read is taken from the root's index
    (launcher/run/cache_index.py) while its plan.json is unchanged."""
    found: Dict[Tuple[str, str], Source] = {}
    pending: Dict[Tuple[str, str], Tuple[Path, Source]] = {}  # computed there, not complete yet
    listed = run_dirs([Path(run_root), *roots], skip)
    indexes = {root: cache_index.Index(root) for root in dict.fromkeys(r for r, _ in listed)}
    for root, run_dir in listed:
        sig = cache_index.signature(run_dir)
        known = indexes[root].done(run_dir, sig)
        if known is None:
            known, open_points = _read_run(run_dir, cluster)
            indexes[root].record(run_dir, sig, known, whole=not open_points)
            for k, source in open_points:
                if source is not None:
                    pending.setdefault(k, (run_dir, source))
        for name, key, source in known:
            found.setdefault((name, key), source)
    for root, index in indexes.items():
        index.save([r for rt, r in listed if rt == root])
    wanted = [(k, run_dir, source) for k, (run_dir, source) in pending.items() if k not in found and cluster]
    if wanted:  # one scheduler query (per run on the local scheduler) for every candidate
        for (k, _, source), open_ in zip(wanted, inflight.alive(cluster, [(r, s["jobs"]) for _, r, s in wanted])):
            if open_:
                found[k] = source
    return found


def _read_run(run_dir: Path, cluster: Optional[dict]) -> Tuple[list, list]:
    """([[stage, key, source]] of the points the run completed or took from the cache, [((stage, key),
    source with `jobs`: those its open tasks are recorded under, or None when `cluster` cannot wait on
    them)] of the points it has not completed). A plan that cannot be read: nothing."""
    try:
        plan = Plan.from_json(json.loads((run_dir / "plan.json").read_text()))
    except (OSError, ValueError, TypeError, KeyError):
        return [], []  # a plan of another version, torn or foreign: not a source
    done, open_points, latest = [], [], None
    for name, stage in plan.stages.items():
        for key, source in _points(run_dir, stage):
            if "jobs" not in source:
                done.append([name, key, source])
                continue
            open_points.append(((name, key), None))
            if (cluster is None or plan.cluster.get("name") != cluster.get("name")
                    or not inflight.nameable(cluster, run_dir)):
                continue  # another scheduler's jobs: nothing to wait on
            latest = inflight.latest_jobs(run_dir) if latest is None else latest
            jobs = inflight.open_jobs(stage, source["point"], layout.markers(run_dir, name, stage.hash).done,
                                      latest.get(name, {}))
            if jobs:
                open_points[-1] = ((name, key), dict(source, jobs=jobs))
    return done, open_points


def _points(run_dir: Path, stage: StagePlan) -> Iterable[Tuple[str, Source]]:
    """(key, source) of each point the run computes or took from the cache; a point it computes but
    has not completed has `jobs` ({}: to be looked up)."""
    if not stage.keys:
        return
    done = layout.markers(run_dir, stage.name, stage.hash).done
    for point in sorted({stage.point_of(p) for p in range(stage.points)}):
        tasks = [point * stage.tasks_per_point, (point + 1) * stage.tasks_per_point]
        if str(point) in stage.cached:
            if not stage.cached[str(point)].get("jobs"):  # waiting on a third run: not a source yet
                yield stage.keys[point], stage.cached[str(point)]
        elif all(t in done for t in range(*tasks)):
            yield stage.keys[point], {"run": str(run_dir), "point": point, "hash": stage.hash, "tasks": tasks}
        else:
            yield stage.keys[point], {"run": str(run_dir), "point": point, "hash": stage.hash, "tasks": tasks,
                                      "jobs": {}}


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


def roots(cluster: dict) -> List[Path]:
    """Where else completed outputs are looked up: the profile's team `cache_dir` (launcher/plan/team_cache.py)."""
    from launcher.plan import team_cache

    where = team_cache.usable(cluster)
    return [where] if where is not None else []


def apply(plan: Plan, run_root: Path, rerun: Sequence[str] = (), skip: Optional[Path] = None,
          only: Optional[Set[Tuple[str, int]]] = None) -> None:
    """Mark the points whose output is complete in another run, or being computed by one now
    (StagePlan.cached; in flight: with `jobs`, and the stages after them wait on those: inflight.py),
    and make every aftercorr edge on a parent with cached points wait on the whole parent array (its
    cached tasks are not in it: Slurm pairs array indices). `only`: look up just these (stage, point)s
    (resume after an in-flight source failed). Modifies the plan in place."""
    force = forced(plan, rerun)
    index = None
    for name, stage in plan.stages.items():
        if name in force or not stage.cache or not stage.keys or not keys.shares(plan, stage):
            continue
        index = completed(run_root, skip, plan.cluster, roots(plan.cluster)) if index is None else index
        for point in sorted({stage.point_of(p) for p in range(stage.points)}):
            source = index.get((name, stage.keys[point]))
            if source is not None and (only is None or (name, point) in only):
                stage.cached[str(point)] = source
    for stage in plan.stages.values():
        for d in stage.deps:
            if d.kind == "aftercorr" and plan.stages[d.parent].cached:
                d.kind, d.note = "afterok", "cached"
    inflight.wait_edges(plan)
