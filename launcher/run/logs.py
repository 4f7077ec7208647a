"""`launcher logs`: find a task's newest log files through the ledger and print (or follow) them."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import List, Union

from launcher.errors import LauncherError, NotFound
from launcher.run.rundir import Run
from launcher.run.status import parent_tasks
from launcher.run.status_view import task_log_paths, task_ranks_logged, why


def task_job(run: Run, stage: str, task: int) -> str:
    """The newest submission's '<array job>_<index>' of a stage's task (a shared point's task: the one
    that computes it). Raises NotFound (no such stage or task), LauncherError (never submitted)."""
    plan = run.plan()
    if stage not in plan.stages:
        raise NotFound(f"run {run.id} has no stage '{stage}' (stages: {', '.join(plan.stages)})")
    if not 0 <= task < plan.stages[stage].total_tasks:
        raise NotFound(f"stage '{stage}' has tasks 0..{plan.stages[stage].total_tasks - 1}, not {task}")
    task = plan.stages[stage].task_of(task)  # a shared point's task: the one that computes it
    rec = next((r for r in reversed(run.submissions()) if r["stage"] == stage and task in r["tasks"]), None)
    if rec is None:
        raise LauncherError(f"task {task} of stage '{stage}' was never submitted")
    return f"{rec['job_id']}_{task - rec['offset']}"


def log_files(run: Run, stage: str, task: int, rank: Union[int, str] = 0) -> List[Path]:
    """[stdout, stderr] of one rank of a task (rank 0: the batch script's own), or of every rank that
    wrote a log (rank 'all': rank 0's pair first). A multi-node task's ranks are srun's %t."""
    job = task_job(run, stage, task)
    ranks = (task_ranks_logged(run.path, stage, job) or [0]) if rank == "all" else [int(rank)]
    return [f for r in ranks for f in task_log_paths(run.path, stage, job, r)]


def show_logs(run: Run, stage: str, task: int, follow: bool, rank: Union[int, str] = 0) -> int:
    """Print the task's stdout to stdout and its stderr to stderr (following them with `follow` until
    the task ends). The paths go to stderr first, so stdout stays the log; a task without a log file
    says why (pending and its reason, cancelled before it started, its parent failed, log removed).
    `rank`: which rank of a multi-node task (0, the batch script's, by default), or 'all'; when other
    ranks wrote logs too, a line on stderr names them."""
    files = log_files(run, stage, task, rank)
    for f in files:
        what = "stdout" if f.suffix == ".out" else "stderr"
        label = f"{stage}[{task}]" + (f" rank {f.name.split('_')[2]}" if rank == "all" or rank != 0 else "")
        print(f"==> {label} {what}: {f}" + ("" if f.exists() else " (not there)"), file=sys.stderr)
    others = [r for r in task_ranks_logged(run.path, stage, task_job(run, stage, task)) if r != 0]
    if rank == 0 and others:
        print(f"==> ranks {', '.join(map(str, others))} of {stage}[{task}] wrote logs too: --rank N, or --rank all",
              file=sys.stderr)
    offsets = {f: 0 for f in files}

    def pump() -> bool:
        grew = False
        for f in files:
            if f.exists():
                with open(f, "rb") as fh:
                    fh.seek(offsets[f])
                    data = fh.read()
                if data:
                    offsets[f] += len(data)
                    (sys.stdout if f.suffix == ".out" else sys.stderr).write(data.decode(errors="replace"))
                    grew = True
        sys.stdout.flush()
        return grew

    pump()
    from launcher.run import ops

    if not any(f.exists() for f in files):
        try:
            reason = no_log_reason(ops.status(run), run.plan(), stage, task)
        except LauncherError as e:  # the scheduler could not be asked: the files still say what they say
            reason = f"its state is unknown: {e}"
        print(f"(no log for {stage}[{task}]: {reason})", file=sys.stderr)
    if not follow:
        return 0
    while True:
        time.sleep(1.0)
        pump()
        state = ops.status(run).stages[stage].tasks[task]
        if state not in ("pending", "running"):
            pump()
            return 0


def no_log_reason(st, plan, stage: str, task: int) -> str:
    """Why a task has no log file, from its state (st: a status.RunStatus of the run, plan its Plan)."""
    s = st.stages[stage]
    state = s.tasks[task]
    if state == "pending":
        return f"pending, {why(s, task) or 'the scheduler gave no reason yet'}; it has not started"
    if state == "running":
        return "running; it has written no output yet"
    if state in ("cancelled", "skipped"):
        for d in plan.stages[stage].deps:
            bad = [p for p in parent_tasks(plan, stage, d.kind, d.parent, task)
                   if st.stages[d.parent].tasks[p] in ("failed", "cancelled", "lost")]
            if bad and state == "cancelled":
                what = st.stages[d.parent].tasks[bad[0]]
                return (f"never ran: its parent {d.parent}[{bad[0]}] {what} ({d.kind} can no longer hold, so "
                        f"the scheduler cancelled it)")
        if state == "skipped":
            return "skipped: not needed (its dependency can never hold); it never ran"
        return "cancelled before it started"
    if state == "lost":
        return f"the scheduler no longer knows its job {s.jobs.get(task, '?')}; no log was written here"
    return f"the task {state}, but its log files are gone (removed or moved)"
