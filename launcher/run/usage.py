"""`launcher usage <run|campaign> [--json]`: what a run (or every run of a campaign) really cost, per
stage and in total, next to the plan's GPU-hour upper bound.

One scheduler question per call: the job ids of every run on a Slurm cluster go into ONE `sacct`
(Slurm.usage: --duplicates, so requeued attempts count); a local run is read from its local driver's
records (Local.usage: no process started). The numbers and how they are computed (seff's CPU and
memory efficiency, GPU-hours from AllocTRES): launcher/costs.py. The plan's figure is
StagePlan.gpu_hours: every task at its time limit (`launcher plan`'s "GPU-h max" column).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from launcher import costs as accounting
from launcher.errors import LauncherError, NotFound
if TYPE_CHECKING:  # the CLI imports this module for its parser at every start: the planner stays out
    from launcher.run.rundir import Run

# Job and array task ids -> (stage, global task) of a run, from its submission ledger.
TaskMap = Dict[str, Tuple[str, int]]


def runs_of(target: str, root: Optional[Path] = None) -> Tuple[List[Run], str]:
    """(the runs, a title): a run id/dir/latest, else every run whose run.json names campaign `target`."""
    from launcher.run.rundir import default_root, list_runs, resolve_run

    root = (root or default_root()).resolve()
    try:
        run = resolve_run(target, root)
        return [run], f"run {run.id}"
    except LauncherError:
        runs = [r for r in list_runs(root) if r.meta.get("campaign") == target]
    if not runs:
        campaigns = sorted({r.meta.get("campaign") or "" for r in list_runs(root)} - {""})
        raise NotFound(f"{target!r} is neither a run nor a campaign under {root} (campaigns: "
                       f"{', '.join(campaigns) or 'none'})")
    return runs, f"campaign {target} ({len(runs)} run(s))"


def task_map(run: Run) -> TaskMap:
    """"<job>_<index>" -> (stage, global task) for every task the run submitted (every attempt of a
    task resubmitted by resume is a job of its own)."""
    out: TaskMap = {}
    for rec in run.submissions():
        for t in rec["tasks"]:
            out[f"{rec['job_id']}_{t - rec['offset']}"] = (rec["stage"], t)
    return out


def attempts_of(runs: List[Run]) -> Dict[str, Dict[str, list]]:
    """{run id: {task id: [Attempt]}}: one Slurm.usage (one sacct) per cluster profile over every run
    on it; local runs from their drivers' records."""
    from launcher import backends
    from launcher.run.ops import backend_for

    out: Dict[str, Dict[str, list]] = {}
    by_cluster: Dict[str, List[Run]] = {}
    for run in runs:
        cluster = run.plan().cluster
        if not backends.get(cluster["backend"]).accounting_spans_runs:
            out[run.id] = backend_for(cluster, run.path).usage({j.split("_")[0] for j in task_map(run)})
        else:
            by_cluster.setdefault(json.dumps(cluster, sort_keys=True, default=str), []).append(run)
    for key, group in by_cluster.items():
        ids = {j.split("_")[0] for r in group for j in task_map(r)}
        submitted = {rec["job_id"]: rec.get("time", 0.0) for r in group for rec in r.submissions()}
        found = accounting.since(backend_for(json.loads(key), group[0].path).usage(ids), submitted)
        for run in group:
            mine = task_map(run)
            out[run.id] = {j: a for j, a in found.items() if j in mine}
    return out


def _finite(x: float) -> Optional[float]:
    return None if math.isinf(x) else round(x, 3)


def run_usage(run: Run, attempts: Dict[str, list]) -> Dict[str, Any]:
    """One run's usage: per stage (in plan order) accounting.summarize() + kind + planned_gpu_hours
    (None: no time limit), and the run's total."""
    plan, tasks = run.plan(), task_map(run)
    per_stage: Dict[str, Dict[str, list]] = {name: {} for name in plan.stages}
    for job, a in attempts.items():
        if job in tasks and tasks[job][0] in per_stage:
            per_stage[tasks[job][0]][job] = a
    stages = [{"name": name, "kind": st.kind, **accounting.summarize(per_stage[name]),
               "planned_gpu_hours": _finite(st.gpu_hours)} for name, st in plan.stages.items()]
    total = {**accounting.summarize(attempts), "planned_gpu_hours": _finite(plan.gpu_hours)}
    return {"run": run.id, "backend": plan.cluster["backend"], "campaign": run.meta.get("campaign"),
            "stages": stages, "total": total}


def usage(target: str, root: Optional[Path] = None) -> Dict[str, Any]:
    """`launcher usage --json`: {"target", "title", "runs": [run_usage()], "total"}."""
    runs, title = runs_of(target, root)
    found = attempts_of(runs)
    every = {f"{r.id}/{j}": a for r in runs for j, a in found[r.id].items()}  # local job ids repeat across runs
    planned = sum(r.plan().gpu_hours for r in runs)
    return {"target": target, "title": title, "runs": [run_usage(r, found[r.id]) for r in runs],
            "total": {**accounting.summarize(every), "planned_gpu_hours": _finite(planned)}}


def cost_per_variant(runs: List[Run]) -> Dict[str, Dict[str, Any]]:
    """{variant: summarize() of every task of the sweep points of that variant}, the variant named as
    the evaluation results name it (jobs.adapters.eval_results.variant: the overrides that differ between
    points, seed aside). For `launcher report`; one usage query as `usage` makes."""
    from jobs.adapters.eval_results import variant

    found = attempts_of(runs)
    groups: Dict[str, Dict[str, list]] = {}
    for run in runs:
        plan, tasks = run.plan(), task_map(run)
        for job, a in found[run.id].items():
            if job not in tasks:
                continue
            stage, task = tasks[job]
            point = task // plan.stages[stage].tasks_per_point
            name = variant(plan.points, point)
            groups.setdefault(name, {})[f"{run.id}/{job}"] = a
    return {name: accounting.summarize(g) for name, g in sorted(groups.items())}


def _hours(s: float) -> str:
    return f"{s / 3600:.2f} h" if s >= 360 else f"{s:.0f} s"


def _pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def table_rows(u: Dict[str, Any]) -> List[List[str]]:
    """The text table's rows: one per (run,) stage, then the totals."""
    rows = []
    for r in u["runs"]:
        for s in r["stages"] + [{"name": "total", **r["total"]}]:
            plan = s.get("planned_gpu_hours")
            rows.append([r["run"] if len(u["runs"]) > 1 else "", s["name"], str(s["tasks"]), _hours(s["elapsed_s"]),
                         f"{s['cpu_hours']:.2f}", f"{s['gpu_hours']:.2f}", "unbounded" if plan is None else f"{plan:.1f}",
                         _pct(s["cpu_efficiency"]), _pct(s["mem_efficiency"]),
                         f"{s['requeues']} ({_hours(s['requeue_lost_s'])})" if s["requeues"] else "0"])
    return rows


COLUMNS = ("run", "stage", "tasks", "elapsed", "CPU-h", "GPU-h", "GPU-h plan max", "CPU eff", "mem eff",
           "requeues (time)")


def cmd_usage(args) -> int:
    from rich.table import Table

    from launcher.reports.display import show

    u = usage(args.target, args.root)
    if args.json:
        print(json.dumps(u, indent=1))
        return 0
    t = Table(title=f"usage of {u['title']}", title_justify="left")
    multi = len(u["runs"]) > 1
    for col in COLUMNS[0 if multi else 1:]:
        t.add_column(col, justify="left" if col in ("run", "stage") else "right")
    for row in table_rows(u):
        t.add_row(*(row if multi else row[1:]))
    tot = u["total"]
    t.caption = (f"in all: {_hours(tot['elapsed_s'])} elapsed, {tot['cpu_hours']:.2f} CPU-h, {tot['gpu_hours']:.2f} "
                 f"GPU-h (plan's upper bound {tot['planned_gpu_hours']} GPU-h), CPU efficiency "
                 f"{_pct(tot['cpu_efficiency'])}, memory efficiency {_pct(tot['mem_efficiency'])}, "
                 f"{tot['requeues']} requeue(s)")
    show(t)  # fitted on a terminal, plain text when piped or with --format plain
    return 0


def register(sub) -> None:
    """The `usage` verb's parser (launcher/cli.py calls this)."""
    sp = sub.add_parser("usage", help="what a run or campaign really cost: per stage and in total, elapsed, "
                                      "CPU- and GPU-hours, CPU and memory efficiency, requeues (one sacct call)",
                        description="Per stage and in total: elapsed time, allocated CPU-hours and GPU-hours "
                        "(AllocTRES), CPU efficiency (TotalCPU / (Elapsed x AllocCPUS)) and memory efficiency "
                        "(peak memory of the steps / allocated memory) as seff computes them, requeues and the "
                        "time their attempts ran, next to the plan's GPU-hour upper bound. One sacct call "
                        "(--duplicates) per call; on cluster=local, the local scheduler's records.")
    sp.add_argument("target", help="run id, run dir, `latest`, or a campaign name")
    sp.add_argument("--root", type=Path, help="run root to look in (default: $LAUNCHER_RUN_ROOT or ./runs)")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp.add_argument("--format", choices=["table", "plain"], help="tables drawn for a terminal, or plain text "
                    "(tab-separated); default: table on a terminal, plain when piped ($LAUNCHER_FORMAT too)")
