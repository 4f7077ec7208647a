"""Task states from the run directory (markers) plus ONE scheduler query for the rest.

A task is
- cached: another run under the run root completed this point's content key (launcher/run/cache.py): the
  run reads that output and never submits the task;
- completed: it has its completion marker (the only proof of success: a job that exited 0 without
  one counts as failed);
- running / pending: the scheduler says so (or the task's running marker does, while accounting lags);
- failed / cancelled: the scheduler says its job ended that way (or, once the scheduler no longer
  knows the job, the task left a failure marker);
- skipped: it did not run and is not needed: a dependency of its stage can never hold although no
  ancestor failed (an `afternotok` stage whose parents all succeeded; stages that wait with
  afterok/aftercorr on a skipped one). Slurm cancels such a task (kill_invalid_depend); it counts as
  done: the run is COMPLETED, and resume never submits it;
- lost: its job is unknown to the scheduler (sacct and squeue) longer than the backend's grace after
  submission (accounting purged, a lost record): resumable, like missing;
- missing: never submitted (or rolled back).
A task of a sweep point that shares its key with an earlier point (launcher/plan/keys.py) is not
submitted: it has the state of the task that computes it (StagePlan.task_of), and StageStatus.shared
says which.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from jobs import layout

from launcher import exitcodes
from launcher.plan.model import Plan
from launcher.run.rundir import Run

STATES = ("completed", "cached", "skipped", "running", "pending", "failed", "cancelled", "lost", "missing")
ACTIVE = {"running", "pending"}
DONE = {"completed", "cached", "skipped"}  # nothing left to do for these
# Tasks that did not run; if their dependency can never hold, they are skipped instead.
NOT_RUN = {"cancelled", "lost", "missing"}


@dataclass
class StageStatus:
    name: str
    total: int
    tasks: Dict[int, str]  # task → state
    job_ids: List[str]
    # (job id, chunk) of jobs still pending/running: resume makes new work depend on them
    active_jobs: List[Tuple[str, int]] = field(default_factory=list)
    # What the same scheduler query said, by task (only where it said something):
    jobs: Dict[int, str] = field(default_factory=dict)  # the newest job that covers it: "<job id>_<index>"
    reasons: Dict[int, str] = field(default_factory=dict)  # why a pending task waits (Slurm's word)
    restarts: Dict[int, int] = field(default_factory=dict)  # requeues the scheduler counted
    # A pending task that waits on its dependency: the parent stages (or outside jobs) not done yet.
    waiting_for: Dict[int, List[str]] = field(default_factory=dict)
    tasks_per_point: int = 1  # task t is task t % tasks_per_point of sweep point t // tasks_per_point
    hash: str = ""  # the stage's config hash: its markers are under stages/<name>/markers/<hash>/
    shared: Dict[int, int] = field(default_factory=dict)  # task -> the task that computes it (shared points)

    @property
    def counts(self) -> Dict[str, int]:
        c = Counter(self.tasks.values())
        return {"total": self.total, **{s: c.get(s, 0) for s in STATES}}

    @property
    def state(self) -> str:
        return summarize(self.tasks.values())


@dataclass
class RunStatus:
    run: str
    stages: Dict[str, StageStatus]
    path: Optional[Path] = None  # the run directory (logs, progress files)
    # nodes the run's health checks found bad ({node: why}): excluded from the run's later submissions
    bad_nodes: Dict[str, List[str]] = field(default_factory=dict)

    @property
    def state(self) -> str:
        state = summarize(s for st in self.stages.values() for s in st.tasks.values())
        return "COMPLETED" if state == "SKIPPED" else state

    @property
    def exit_code(self) -> int:
        """0: completed, 1: something failed and nothing is left running, 2: still going."""
        return {"COMPLETED": exitcodes.OK, "FAILED": exitcodes.FAILED}.get(self.state, exitcodes.RUNNING)


def summarize(states) -> str:
    """COMPLETED (every task done or skipped), SKIPPED (every task skipped), RUNNING, PENDING or FAILED."""
    c = Counter(states)
    if not c or c.keys() <= DONE:
        return "SKIPPED" if c and c.keys() == {"skipped"} else "COMPLETED"
    if c["running"]:
        return "RUNNING"
    if c["pending"]:
        return "PENDING"
    return "FAILED"


def collect(run: Run, backend, strict: bool = False) -> RunStatus:
    """Every task's state. One scheduler query (backend.query) for the tasks without a completion
    marker. A job the scheduler does not report is pending for `backend.lost_grace_s` after its
    submission (accounting lags a fresh job), lost after that; `strict` (resume, cancel) asks the
    scheduler about every such job at once, so nothing is ever made to depend on a job it does not know."""
    plan = run.plan()
    # The newest sbatch record that covers each task decides its scheduler state.
    latest: Dict[str, Dict[int, Tuple[str, int, int]]] = {name: {} for name in plan.stages}
    job_ids: Dict[str, List[str]] = {name: [] for name in plan.stages}
    submitted_at: Dict[str, float] = {}
    for rec in run.submissions():
        if rec["stage"] not in latest:
            continue
        job_ids[rec["stage"]].append(rec["job_id"])
        submitted_at[rec["job_id"]] = rec.get("time", 0.0)
        for t in rec["tasks"]:
            latest[rec["stage"]][t] = (rec["job_id"], t - rec["offset"], rec["chunk"])
    marks = {name: layout.markers(run.path, name, st.hash) for name, st in plan.stages.items()}
    to_query = {latest[n][t][0] for n, st in plan.stages.items() for t in range(st.total_tasks)
                if t not in marks[n].done and t in latest[n]}
    grace = getattr(backend, "lost_grace_s", 0.0)
    now = time.time()
    settled = {j for j in to_query if strict or now - submitted_at.get(j, 0.0) > grace}
    sched = backend.query(to_query, settled=settled) if to_query else {}

    states: Dict[str, Dict[int, str]] = {}
    for name, st in plan.stages.items():
        m, tasks = marks[name], {}
        for t in st.run_tasks():
            if t in m.done:
                tasks[t] = "completed"
            elif t not in latest[name]:
                tasks[t] = "missing"  # never submitted (or rolled back): resume submits it
            else:
                jid, idx, _ = latest[name][t]
                s: Optional[str] = sched.get(jid, {}).get(idx)
                if s is None:  # the scheduler does not know this task
                    if jid not in settled:
                        s = "pending"  # accounting lags a just-submitted job by a moment
                    else:
                        s = "failed" if _failed_by(run, name, st.hash, t, f"{jid}_{idx}", m) else "lost"
                if s == "pending" and m.running.get(t) == f"{jid}_{idx}":
                    s = "running"  # the task says so; accounting has not caught up yet
                tasks[t] = "failed" if s == "completed" else s  # exited 0 but left no marker
        tasks.update(_cached_states(plan, st))
        states[name] = _with_shared(st, tasks)
    _mark_skipped(plan, states)
    states = {name: _with_shared(st, states[name]) for name, st in plan.stages.items()}

    stages = {}
    for name, st in plan.stages.items():
        active = sorted({(latest[name][t][0], latest[name][t][2]) for t, s in states[name].items()
                         if s in ACTIVE and st.task_of(t) == t and t in latest[name]})  # not another run's
        stages[name] = StageStatus(name=name, total=st.total_tasks, tasks=states[name], job_ids=job_ids[name],
                                   active_jobs=active, tasks_per_point=st.tasks_per_point, hash=st.hash,
                                   shared={t: st.task_of(t) for t in range(st.total_tasks) if st.task_of(t) != t},
                                   **_details(plan, name, states, latest[name], sched))
        stages[name].waiting_for.update(_inflight_waits(st, states[name]))
    bad = {node: rec.get("problems") or [] for node, rec in layout.bad_nodes(run.path).items()}
    return RunStatus(run=run.id, stages=stages, path=run.path, bad_nodes=bad)


def _cached_states(plan: Plan, st) -> Dict[int, str]:
    """Tasks whose point another run computed: cached; one it is computing (in flight,
    launcher/run/inflight.py): the state of that run's point (pending, running; failed when its jobs ended
    without completing it: resume computes it here), one scheduler query per such point."""
    out: Dict[int, str] = {}
    for point, source in st.cached.items():
        state = "cached"
        if source.get("jobs"):
            from launcher.run import inflight

            state = inflight.source_state(plan.cluster, st.name, source)
        out.update({t: state for t in range(int(point) * st.tasks_per_point, (int(point) + 1) * st.tasks_per_point)})
    return out


def _inflight_waits(st, states: Dict[int, str]) -> Dict[int, List[str]]:
    """What a task another run is computing waits for: that run (`waiting` in status)."""
    out: Dict[int, List[str]] = {}
    for point, source in st.cached.items():
        for t in range(int(point) * st.tasks_per_point, (int(point) + 1) * st.tasks_per_point) if source.get("jobs") else ():
            if states.get(t) in ACTIVE:
                out[t] = [f"run {Path(source['run']).name} (in flight)"]
    return out


def _details(plan: Plan, name: str, states: Dict[str, Dict[int, str]], latest: Dict[int, Tuple[str, int, int]],
             sched) -> dict:
    """StageStatus's per-task fields from the ledger and the scheduler's answer (an Answer carries
    reasons and restarts; a plain {job: {index: state}} carries none)."""
    reasons_of = getattr(sched, "reasons", {})
    restarts_of = getattr(sched, "restarts", {})
    jobs, reasons, restarts, waiting = {}, {}, {}, {}
    whole: dict = {}  # waited_on's open tasks of parents waited on whole, once per stage
    for t, (jid, idx, _) in latest.items():
        jobs[t] = f"{jid}_{idx}"
        if idx in restarts_of.get(jid, {}):
            restarts[t] = restarts_of[jid][idx]
        if states[name][t] != "pending":
            continue
        reason = reasons_of.get(jid, {}).get(idx)
        if reason:
            reasons[t] = reason
        if reason in (None, "Dependency"):
            parents = waited_on(plan, name, t, states, whole)
            if not parents and reason == "Dependency":  # then it is an outside job (after: {job:N: ...})
                parents = [f"job {j}" for j in plan.stages[name].external]
            if parents:
                waiting[t] = parents
    return {"jobs": jobs, "reasons": reasons, "restarts": restarts, "waiting_for": waiting}


def waited_on(plan: Plan, stage: str, task: int, states: Dict[str, Dict[int, str]],
              whole: Optional[dict] = None) -> List[str]:
    """The parents a pending task's dependency still waits for: each parent stage with a task it waits
    on (parent_tasks) that is not done, as 'stage', or 'stage[i]' when it is one task. `whole` (a dict
    the caller keeps for one answer) holds the open tasks of a parent waited on as a whole, found once:
    asked per pending task, a 10,000-point sweep's status took a minute (pending x parent tasks)."""
    out = []
    st = plan.stages[stage]
    for d in st.deps:
        total = plan.stages[d.parent].total_tasks
        if whole is not None and not (d.kind == "aftercorr" and task < total) and not plan.independent:
            if d.parent not in whole:  # parent_tasks: every parent task
                whole[d.parent] = [p for p in range(total) if states[d.parent][p] not in DONE]
            open_tasks = whole[d.parent]
        else:
            open_tasks = [p for p in parent_tasks(plan, stage, d.kind, d.parent, task)
                          if states[d.parent][p] not in DONE]
        if open_tasks:
            out.append(d.parent if len(open_tasks) > 1 else f"{d.parent}[{open_tasks[0]}]")
    return out


def _with_shared(st, tasks: Dict[int, str]) -> Dict[int, str]:
    """Every task's state, a shared task's being that of the task computing it; in task order."""
    return {t: tasks[st.task_of(t)] for t in range(st.total_tasks)}


class _RunDirOnly:
    """A scheduler that knows no job: what `recorded_state` asks instead of Slurm."""

    lost_grace_s = 0.0

    def query(self, job_ids, settled=()) -> Dict[str, Dict[int, str]]:
        return {}


def recorded_state(run: Run) -> str:
    """The run's state from its directory alone, no scheduler query (`launcher runs`, for many runs):
    COMPLETED: every task completed (or is not needed, as `status` says); FAILED: some task's newest job
    left a failure marker (other tasks may still run); UNFINISHED: anything else (queued, running, or
    ended without a marker: `launcher status` asks the scheduler)."""
    tasks = [s for st in collect(run, _RunDirOnly(), strict=True).stages.values() for s in st.tasks.values()]
    if all(s in DONE for s in tasks):
        return "COMPLETED"
    return "FAILED" if "failed" in tasks else "UNFINISHED"


def _failed_by(run: Run, stage: str, stage_hash: str, task: int, job: str, m: layout.Markers) -> bool:
    """The task's failure marker was written by this job (not by an earlier attempt)."""
    if task not in m.failed:
        return False
    info = layout.read_json(layout.marker_path(run.path, stage, stage_hash, task, "failed"), {}) or {}
    return info.get("job_id") == job


def parent_tasks(plan: Plan, stage: str, kind: str, parent: str, task: int) -> List[int]:
    """The parent tasks a task's dependency edge waits on. aftercorr: array index i waits for the
    parent's index i (the same global task: both arrays are chunked alike), or for the whole parent
    when it has no such index (Slurm's rule); every other kind waits on every parent task, or under
    sweep.independent on the parent tasks of the same point."""
    total = plan.stages[parent].total_tasks
    if kind == "aftercorr" and task < total:
        return [task]
    if plan.independent:  # sweep.independent: the same point's parent tasks (render.build_requests)
        per = plan.stages[parent].tasks_per_point
        point = plan.stages[parent].point_of(task // plan.stages[stage].tasks_per_point)  # its computing point
        return list(range(point * per, (point + 1) * per))
    return list(range(total))


def never_holds(kind: str, parent_states: List[str]) -> bool:
    """A dependency that can never hold although nothing upstream failed: the task is not needed.
    afternotok (run only if a parent failed) when every parent succeeded or was skipped; afterok and
    aftercorr (run only if every parent succeeded) when a parent was skipped. afterany and after hold
    whatever the parents did (Slurm runs them after a cancelled, i.e. skipped, parent)."""
    if kind == "afternotok":
        return all(s in DONE for s in parent_states)
    if kind in ("afterok", "aftercorr"):
        return any(s == "skipped" for s in parent_states)
    return False


def _mark_skipped(plan: Plan, states: Dict[str, Dict[int, str]]) -> None:
    """Tasks that did not run (cancelled, lost, never submitted) and whose dependency can never hold
    become skipped, in topological order so that skips propagate down afterok/aftercorr edges."""
    for name, st in plan.stages.items():
        for t, s in states[name].items():
            if s in NOT_RUN and any(never_holds(d.kind, [states[d.parent][p] for p in
                                                         parent_tasks(plan, name, d.kind, d.parent, t)])
                                    for d in st.deps):
                states[name][t] = "skipped"
