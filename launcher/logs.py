"""`launcher logs`: find a task's newest log files through the ledger and print (or follow) them."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import List

from launcher.errors import LauncherError, NotFound
from launcher.rundir import Run
from launcher.status import parent_tasks
from launcher.status_view import task_log_paths, why


def log_files(run: Run, stage: str, task: int) -> List[Path]:
    plan = run.plan()
    if stage not in plan.stages:
        raise NotFound(f"run {run.id} has no stage '{stage}' (stages: {', '.join(plan.stages)})")
    if not 0 <= task < plan.stages[stage].total_tasks:
        raise NotFound(f"stage '{stage}' has tasks 0..{plan.stages[stage].total_tasks - 1}, not {task}")
    task = plan.stages[stage].task_of(task)  # a shared point's task: the one that computes it
    rec = next((r for r in reversed(run.submissions()) if r["stage"] == stage and task in r["tasks"]), None)
    if rec is None:
        raise LauncherError(f"task {task} of stage '{stage}' was never submitted")
    return list(task_log_paths(run.path, stage, f"{rec['job_id']}_{task - rec['offset']}"))


def show_logs(run: Run, stage: str, task: int, follow: bool) -> int:
    """Print the task's stdout to stdout and its stderr to stderr (following them with `follow` until
    the task ends). The paths go to stderr first, so stdout stays the log; a task without a log file
    says why (pending and its reason, cancelled before it started, its parent failed, log removed)."""
    files = log_files(run, stage, task)
    for f, what in zip(files, ("stdout", "stderr")):
        print(f"==> {stage}[{task}] {what}: {f}" + ("" if f.exists() else " (not there)"), file=sys.stderr)
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
    from launcher import ops

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
