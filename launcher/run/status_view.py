"""What `launcher status` shows beyond the counts: per-point and per-task detail (`status --json`), why
pending tasks wait, and the live progress of running training tasks (jobs/runtime/progress.py). Reads
only the run directory and the RunStatus that status.collect built from its one scheduler query.
The JSON schema is documented in docs/status-and-logs.md; its keys are stable (null where unknown)."""
from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from jobs import layout
from jobs.runtime.progress import eta_s, read_progress

from launcher.sbatch.lognames import log_stem
from launcher.run.status import STATES, RunStatus, StageStatus, summarize

SCHEMA = 1  # bumped only when a key changes meaning or goes away; new keys may be added
# Human words for the scheduler reasons a user meets most; every other reason is shown as Slurm says it.
GLOSS = {"JobArrayTaskLimit": "throttled (array %N)", "Resources": "Resources (none free)",
         "Priority": "Priority (others first)"}


def task_log_paths(run_dir: Path, stage: str, job: str, rank: int = 0) -> Tuple[Path, Path]:
    """(stdout, stderr) of array task `job` ('<job id>_<index>'): stages/<stage>/logs/<stem>.out and
    .err (launcher/sbatch/lognames.py log_stem). Rank 0's are the batch script's own --output/--error;
    a multi-node task's other ranks (srun's %t) write their own; what `launcher logs` prints."""
    logs = layout.stage_dir(run_dir, stage) / "logs"
    array_job, index = job.rsplit("_", 1)
    stem = log_stem(array_job, index, rank)
    return logs / f"{stem}.out", logs / f"{stem}.err"


def task_ranks_logged(run_dir: Path, stage: str, job: str) -> List[int]:
    """The ranks of array task `job` that wrote a log file, sorted (rank 0 first; [] when none did)."""
    logs = layout.stage_dir(run_dir, stage) / "logs"
    array_job, index = job.rsplit("_", 1)
    found = {int(f.name.split("_")[2]) for f in logs.glob(log_stem(array_job, index, "*") + ".*")
             if f.name.split("_")[2].isdigit()}
    return sorted(found)


def progress(run_dir: Path, stage: str, task: int, now: Optional[float] = None) -> Optional[Dict[str, Any]]:
    """A running task's last progress record (jobs.layout.progress_path), with eta_s (seconds left at
    the average rate since the attempt started) and age_s (seconds since the task wrote it); None when
    the task wrote none."""
    rec = read_progress(layout.progress_path(run_dir, stage, task))
    if rec is None:
        return None
    now = time.time() if now is None else now
    out = {k: rec.get(k) for k in ("step", "total_steps", "tokens", "tokens_per_s", "loss", "last_checkpoint")}
    out["eta_s"] = None if (e := eta_s(rec)) is None else round(e, 1)
    out["age_s"] = None if rec.get("time") is None else round(max(0.0, now - rec["time"]), 1)
    return out


def progress_text(p: Dict[str, Any]) -> str:
    """'step 120/1000 · 3.1k tok/s · loss 2.31 · eta 4m' from a progress() record (parts it lacks are
    left out); ' · 12m old' when the task has not written for over 5 minutes (stuck, or between logs)."""
    parts = []
    if p.get("step") is not None:
        parts.append(f"step {p['step']}" + (f"/{p['total_steps']}" if p.get("total_steps") else ""))
    if p.get("tokens_per_s"):
        parts.append(f"{si(p['tokens_per_s'])} tok/s")
    if p.get("loss") is not None:
        parts.append(f"loss {p['loss']:.3g}")
    if p.get("eta_s") is not None:
        parts.append(f"eta {duration(p['eta_s'])}")
    if (p.get("age_s") or 0) > 300:
        parts.append(f"{duration(p['age_s'])} old")
    return " · ".join(parts)


def duration(seconds: float) -> str:
    """45s, 4m, 2h05m, 3d04h: two units at most."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def si(x: float) -> str:
    """1.2k, 3.4M, 5.0G: a rate or count in three figures."""
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= div:
            return f"{x / div:.1f}{unit}"
    return f"{x:.0f}"


def why(s: StageStatus, task: int) -> str:
    """Why a pending task waits, in words: 'waiting for shards' (its dependency), 'throttled (array
    %N)', or the scheduler's reason as it gave it (Priority, QOSMaxGRESPerUser, ReqNodeNotAvail, ...);
    '' when nothing is known (just submitted: the scheduler has not said yet)."""
    if task in s.waiting_for:
        return "waiting for " + " + ".join(s.waiting_for[task])
    reason = s.reasons.get(task, "")
    return GLOSS.get(reason, reason)


def pending_summary(s: StageStatus) -> str:
    """The stage's pending tasks by reason, most first: '3 waiting for shards, 2 Priority (others first)'."""
    c = Counter(why(s, t) or "pending" for t, state in s.tasks.items() if state == "pending")
    return ", ".join(f"{n} {w}" for w, n in sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))


def stage_progress(run_dir: Optional[Path], s: StageStatus, now: Optional[float] = None) -> str:
    """The progress column: the first running task that wrote a progress file ('[2] ' before it when the
    stage has more than one task), '(+k more)' for the other running tasks that wrote one."""
    if run_dir is None:
        return ""
    found = [(t, p) for t in sorted(t for t, st in s.tasks.items() if st == "running")
             if (p := progress(run_dir, s.name, t, now)) is not None]
    if not found:
        return ""
    t, p = found[0]
    text = (f"[{t}] " if s.total > 1 else "") + progress_text(p)
    return text + (f" (+{len(found) - 1} more)" if len(found) > 1 else "")


def _counts(states: List[str]) -> Dict[str, int]:
    c = Counter(states)
    return {"total": len(states), **{k: c.get(k, 0) for k in STATES}}


def _restarts(run_dir: Path, s: StageStatus, task: int, state: str) -> Optional[int]:
    """Requeues of a task: the scheduler's count (local backend), else what the task recorded in its
    marker: the completion or failure marker, or the running marker of its current attempt."""
    if task in s.restarts:
        return s.restarts[task]
    suffix = {"completed": "done", "failed": "failed", "running": f"running-{s.jobs.get(task)}"}.get(state)
    if suffix is None:
        return None
    try:  # a running marker written before markers had content is empty: not known
        rec = layout.read_json(layout.marker_path(run_dir, s.name, s.hash, task, suffix), None)
    except (OSError, ValueError):
        return None
    return rec.get("restarts") if isinstance(rec, dict) else None


def task_json(run_dir: Path, s: StageStatus, task: int, now: float) -> Dict[str, Any]:
    """One array task: state, its newest job, why it waits, restarts, log paths, live progress."""
    state = s.tasks[task]
    point, index = divmod(task, s.tasks_per_point)
    job = s.jobs.get(task)
    logs = task_log_paths(run_dir, s.name, job) if job else None
    return {"task": task, "point": point, "index": index, "state": state, "job": job,
            "reason": s.reasons.get(task) if state == "pending" else None,
            "waiting_for": s.waiting_for.get(task, []), "why": why(s, task) if state == "pending" else None,
            "restarts": _restarts(run_dir, s, task, state),
            "log": {"stdout": str(logs[0]), "stderr": str(logs[1])} if logs else None,
            "progress": progress(run_dir, s.name, task, now) if state == "running" else None}


def stage_json(run_dir: Path, s: StageStatus, now: float) -> Dict[str, Any]:
    tasks = [task_json(run_dir, s, t, now) for t in sorted(s.tasks)]
    by_point: Dict[int, List[Dict[str, Any]]] = {}
    for x in tasks:
        by_point.setdefault(x["point"], []).append(x)
    points = [{"point": p, "state": summarize(x["state"] for x in mine), "tasks": _counts([x["state"] for x in mine]),
               "failed": [x["task"] for x in mine if x["state"] == "failed"],
               "cancelled": [x["task"] for x in mine if x["state"] == "cancelled"]}
              for p, mine in sorted(by_point.items())]
    return {"name": s.name, "state": s.state, "tasks": s.counts, "job_ids": s.job_ids,
            "failed": [t for t in sorted(s.tasks) if s.tasks[t] == "failed"],
            "cancelled": [t for t in sorted(s.tasks) if s.tasks[t] == "cancelled"],
            "pending_reasons": dict(Counter(x["reason"] or "unknown" for x in tasks if x["state"] == "pending")),
            "points": points, "array": tasks,
            # shared sweep points: {task: the task that computes it} (docs/content-keys.md)
            "shared": {str(t): c for t, c in sorted(s.shared.items())}}


def status_json(st: RunStatus, now: Optional[float] = None) -> Dict[str, Any]:
    """`launcher status --json`: the run, then per stage its counts, failed and cancelled task indices,
    per point and per array task (docs/status-and-logs.md has every key)."""
    now = time.time() if now is None else now
    return {"schema": SCHEMA, "run": st.run, "path": str(st.path) if st.path else None, "state": st.state,
            "exit_code": st.exit_code, "time": round(now, 3),
            "stages": [stage_json(st.path, s, now) for s in st.stages.values()],
            "bad_nodes": st.bad_nodes}  # {node: [problems]}: the health check's, excluded from later jobs
