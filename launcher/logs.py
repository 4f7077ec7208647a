"""`launcher logs`: find a task's newest log files through the ledger and print (or follow) them."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import List

from jobs import layout

from launcher.errors import LauncherError, NotFound
from launcher.rundir import Run


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
    logs = layout.stage_dir(run.path, stage) / "logs"
    stem = f"{rec['job_id']}_{task - rec['offset']}_0_log"  # submitit's %A_%a_%t naming
    return [logs / f"{stem}.out", logs / f"{stem}.err"]


def show_logs(run: Run, stage: str, task: int, follow: bool) -> int:
    files = log_files(run, stage, task)
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
    if not any(f.exists() for f in files):
        print(f"(no log yet for {stage}[{task}]: {files[0]})", file=sys.stderr)
    if not follow:
        return 0
    from launcher import ops

    while True:
        time.sleep(1.0)
        pump()
        state = ops.status(run).stages[stage].tasks[task]
        if state not in ("pending", "running"):
            pump()
            return 0
