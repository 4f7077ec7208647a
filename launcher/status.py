"""Task states from the run directory (markers) plus ONE scheduler query for the rest."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

from jobs import layout

from .rundir import Run

STATES = ("completed", "running", "pending", "failed", "cancelled", "missing")
ACTIVE = {"running", "pending"}


@dataclass
class StageStatus:
    name: str
    total: int
    tasks: Dict[int, str]  # task → state
    job_ids: List[str]
    # (job id, chunk) of jobs still pending/running: resume makes new work depend on them
    active_jobs: List[Tuple[str, int]] = field(default_factory=list)

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

    @property
    def state(self) -> str:
        return summarize(s for st in self.stages.values() for s in st.tasks.values())

    @property
    def exit_code(self) -> int:
        """0: completed, 1: something failed and nothing is left running, 2: still going."""
        return {"COMPLETED": 0, "FAILED": 1}.get(self.state, 2)

    def to_json(self) -> dict:
        return {"run": self.run, "state": self.state, "stages": [
            {"name": s.name, "state": s.state, "tasks": s.counts, "job_ids": s.job_ids} for s in self.stages.values()]}


def summarize(states) -> str:
    c = Counter(states)
    if not c or c.keys() == {"completed"}:
        return "COMPLETED"
    if c["running"]:
        return "RUNNING"
    if c["pending"]:
        return "PENDING"
    return "FAILED"


def collect(run: Run, backend) -> RunStatus:
    plan = run.plan()
    # The newest sbatch record that covers each task decides its scheduler state.
    latest: Dict[str, Dict[int, Tuple[str, int, int]]] = {name: {} for name in plan.stages}
    job_ids: Dict[str, List[str]] = {name: [] for name in plan.stages}
    for rec in run.submissions():
        if rec["stage"] not in latest:
            continue
        job_ids[rec["stage"]].append(rec["job_id"])
        for t in rec["tasks"]:
            latest[rec["stage"]][t] = (rec["job_id"], t - rec["offset"], rec["chunk"])
    markers = {name: layout.task_markers(run.path, name, st.hash) for name, st in plan.stages.items()}
    done = {name: m[0] for name, m in markers.items()}
    to_query = {latest[n][t][0] for n, st in plan.stages.items() for t in range(st.total_tasks)
                if t not in done[n] and t in latest[n]}
    sched = backend.query(to_query) if to_query else {}

    stages = {}
    for name, st in plan.stages.items():
        tasks, active = {}, set()
        for t in range(st.total_tasks):
            if t in done[name]:
                tasks[t] = "completed"
            elif t not in latest[name]:
                tasks[t] = "missing"  # never submitted (or rolled back): resume submits it
            else:
                jid, idx, chunk = latest[name][t]
                # Not in the answer yet: accounting lags a just-submitted job by a moment.
                s = sched.get(jid, {}).get(idx, "pending")
                if s == "pending" and markers[name][1].get(t) == f"{jid}_{idx}":
                    s = "running"  # the task says so; accounting has not caught up yet
                tasks[t] = "failed" if s == "completed" else s  # exited 0 but left no marker
                if s in ACTIVE:
                    active.add((jid, chunk))
        stages[name] = StageStatus(name=name, total=st.total_tasks, tasks=tasks, job_ids=job_ids[name],
                                   active_jobs=sorted(active))
    return RunStatus(run=run.id, stages=stages)
