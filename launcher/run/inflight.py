"""Points another run is computing right now: the second of two identical `launcher run` started at
once does not compute them again, it waits for the first's jobs (docs/content-keys.md).

A point of a source run is **in flight** when it is not complete (some task has no completion marker)
and every task without a marker has a job in that run's ledger that its scheduler says is pending or
running. A new run references it like a completed one (plan.json `cached`, with `jobs`: the job ids
and array indices it waits on) and its stages that would have waited on that point's stage wait on
those jobs with `afterok` instead (StagePlan.inflight: Slurm job ids, or `<run dir>#<job id>` for the
local scheduler, which reads that run's state: launcher/local/driver.py).

If the source's job fails, the waiting stages are cancelled (kill_invalid_depend): `status` shows the
point as failed (its source ended without markers) and its consumers cancelled; `resume` drops the
reference (`settle`), looks for the key again (a later completion of it, or another run computing it)
and otherwise computes it itself.
Login node only: reads ledgers and marker folders, one scheduler query per source run.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Set, Tuple

from jobs import layout

from launcher import backends
from launcher.plan.model import Plan, StagePlan
from launcher.run.rundir import Run

Jobs = Dict[str, List[int]]  # {job id: [array indices]} a point waits on
OPEN = ("pending", "running")


def latest_jobs(run_dir) -> Dict[str, Dict[int, Tuple[str, int]]]:
    """{stage: {global task: (job id, array index)}}: the newest sbatch record covering each task."""
    out: Dict[str, Dict[int, Tuple[str, int]]] = {}
    for rec in Run(run_dir).submissions():
        for t in rec["tasks"]:
            out.setdefault(rec["stage"], {})[t] = (rec["job_id"], t - rec["offset"])
    return out


def open_jobs(stage: StagePlan, point: int, done: Set[int], latest: Dict[int, Tuple[str, int]]) -> Optional[Jobs]:
    """The jobs the point's tasks without a marker are recorded under, or None when one of them was
    never submitted (then nothing computes it: not in flight). {} when every task is done."""
    jobs: Jobs = {}
    for t in range(point * stage.tasks_per_point, (point + 1) * stage.tasks_per_point):
        if t in done:
            continue
        if t not in latest:
            return None
        jid, idx = latest[t]
        jobs.setdefault(jid, []).append(idx)
    return jobs


def nameable(cluster: dict, run_dir) -> bool:
    """Whether a dependency string can name the run's jobs (a local run dir with ':' or ',' cannot)."""
    ref = backends.get(cluster["backend"]).job_ref(str(run_dir), "1")
    return ":" not in ref and "," not in ref


def alive(cluster: dict, wanted: List[Tuple[object, Jobs]]) -> List[bool]:
    """For each (run dir, jobs): whether every one of those array tasks is pending or running. One
    scheduler query for all of them where one scheduler holds every run's jobs (Slurm:
    accounting_spans_runs), else one per run (the local scheduler's state is per run)."""
    by_run: Dict[object, Set[str]] = {}
    spans = backends.get(cluster["backend"]).accounting_spans_runs
    for run_dir, jobs in wanted:
        by_run.setdefault(None if spans else str(run_dir), set()).update(jobs)
    answers = {}
    for run_dir, ids in by_run.items():
        where = run_dir if run_dir is not None else wanted[0][0]
        answers[run_dir] = backends.for_cluster(cluster, where).query(sorted(ids), settled=sorted(ids))
    out = []
    for run_dir, jobs in wanted:
        states = answers[None if spans else str(run_dir)]
        out.append(all(states.get(jid, {}).get(i) in OPEN for jid, idx in jobs.items() for i in idx))
    return out


def refs(cluster: dict, source: dict) -> List[str]:
    """What a dependency names for the jobs of an in-flight source (backend.job_ref)."""
    cls = backends.get(cluster["backend"])
    return [cls.job_ref(source["run"], jid) for jid in sorted(source.get("jobs") or {}, key=str)]


def source_state(cluster: dict, stage: str, source: dict) -> str:
    """cached (the source has completed the point), pending or running (its jobs still are), failed
    (they ended without completing it: the waiting stages are cancelled; resume recomputes it)."""
    src = source["run"]
    done = layout.markers(src, stage, source["hash"]).done
    jobs = source.get("jobs") or {}
    if all(i in done for i in _point_tasks(src, stage, source)):
        return "cached"
    states = backends.for_cluster(cluster, src).query(list(jobs), settled=list(jobs))
    seen = [states.get(jid, {}).get(i) for jid, idx in jobs.items() for i in idx]
    if any(s == "running" for s in seen) and all(s in OPEN for s in seen):
        return "running"
    return "pending" if all(s in OPEN for s in seen) else "failed"


def _point_tasks(run_dir, stage: str, source: dict) -> range:
    tasks = source.get("tasks")
    if tasks:
        return range(*tasks)
    plan = Run(run_dir).plan()  # older records: the source's own plan says its tasks per point
    n = plan.stages[stage].tasks_per_point
    return range(int(source["point"]) * n, (int(source["point"]) + 1) * n)


def wait_edges(plan: Plan) -> None:
    """Each stage with tasks to run waits on the jobs of its parents' in-flight points, with the kind
    of its edge to that parent (aftercorr: afterok, the jobs are not array-paired with ours), and,
    through a parent that runs nothing here (every point cached or in flight), on that parent's own
    parents' (StagePlan.inflight). Recomputed from `cached`: settle() drops what ended."""
    exported: Dict[str, Set[str]] = {}
    for name, stage in plan.stages.items():  # topological order: parents first
        own = {r for s in stage.cached.values() if s.get("jobs") for r in refs(plan.cluster, s)}
        through = set().union(*(exported[d.parent] for d in stage.deps)) if not stage.run_tasks() else set()
        exported[name] = own | through
        waits: Dict[str, str] = {}
        for d in stage.deps if stage.run_tasks() else ():
            kind = "afterok" if d.kind == "aftercorr" else d.kind
            waits.update({r: kind for r in sorted(exported[d.parent])})
        stage.inflight = waits


def settle(plan: Plan) -> Set[Tuple[str, int]]:
    """Resume: each in-flight reference as it stands now. A completed source becomes a plain cached
    one; one whose jobs ended without completing the point is dropped (returned: {(stage, point)}: the
    run computes it, or takes it from another source); the waiting edges follow (wait_edges)."""
    dropped = set()
    for name, stage in plan.stages.items():
        for point, source in list(stage.cached.items()):
            if not source.get("jobs"):
                continue
            state = source_state(plan.cluster, name, source)
            if state == "cached":
                source.pop("jobs")
            elif state == "failed":
                del stage.cached[point]
                dropped.add((name, int(point)))
    wait_edges(plan)
    return dropped
