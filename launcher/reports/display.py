"""Tables for plan and status, and the live progress view of `wait=true`."""
from __future__ import annotations

import time
from typing import Callable, List

from rich.console import Console
from rich.table import Table

from launcher import exitcodes
from launcher.plan import Plan
from launcher.render import JobRequest
from launcher.status import RunStatus


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """rich exits 1 on a closed stdout, which is "the run failed": launcher.cli.main exits 141."""
        self.quiet = True
        raise BrokenPipeError


console = _Console(highlight=False, width=None if Console().is_terminal else 160)
STYLE = {"COMPLETED": "green", "SKIPPED": "dim", "RUNNING": "cyan", "PENDING": "yellow", "FAILED": "red"}


def plan_table(plan: Plan, requests: List[JobRequest], chunk_size: int) -> Table:
    t = Table(title=f"pipeline '{plan.pipeline}' on cluster '{plan.cluster['name']}' "
                    f"({len(plan.points)} sweep point(s))", title_justify="left")
    for col in ("stage", "kind", "tasks", "sbatch", "resources", "after", "GPU-h max", "hash"):
        t.add_column(col, justify="right" if col in ("tasks", "sbatch", "GPU-h max") else "left")
    for name, s in plan.stages.items():
        r = s.resources
        limit = f"{s.time_min} min" if s.time_min is not None else "no time limit"
        res = [r["partition"] or plan.cluster.get("partition") or "(default)", limit,
               f"{r['nodes']}n x {r['ntasks_per_node']}t x {r['cpus_per_task']}c"]
        if r["gpus_per_node"]:
            res.append(f"{r['gpus_per_node']} {r.get('gpu_type') or 'gpu'}/node")
        if r["mem_gb"] is not None:
            res.append(f"{r['mem_gb']} GB" if r["mem_gb"] else "all memory")
        res += [f"{k}={r[k]}" for k in ("gres", "reservation", "nodelist", "exclude") if r.get(k)]
        if s.groups:  # a sweep that changes the resources: the first point's shown, one array job per set
            res.append(f"{s.group_count} resource sets (one array job each)")
        if s.environment.get("name"):
            res.append(f"env {s.environment['name']}")
        tasks = f"{s.distinct_points}x{s.tasks_per_point}" if s.points > 1 else str(s.tasks_per_point)
        if s.distinct_points != s.points:  # equal content keys: one task set per key (launcher/keys.py)
            tasks += f" ({s.points} points)"
        if s.cached:  # another run computed these points' keys (launcher/cache.py): not submitted
            tasks += f", {len(s.cached)} cached"
        if s.throttle:
            tasks += f" %{s.throttle}"
        deps = ", ".join([f"{d.parent}:{d.kind}" + (f" (declared {d.declared}; shared points: whole array)"
                                                    if d.note == "shared" else
                                                    f" (declared {d.declared})" if d.kind != d.declared else "")
                          for d in s.deps] + [f"job {j}:{k}" for j, k in s.external.items()]) or "-"
        if s.singleton:
            deps += " +singleton"
        n_sbatch = sum(1 for r in requests if r.stage == name)
        t.add_row(name, s.kind, tasks, str(n_sbatch), ", ".join(res), deps, f"{s.gpu_hours:.1f}", s.hash)
    t.caption = (f"{len(requests)} sbatch call(s); GPU-hours upper bound {plan.gpu_hours:.1f} "
                 f"(every task at its time limit); MaxArraySize chunk {chunk_size}"
                 + ("; sweep.independent: every stage per point, each point waits on its own parents"
                    if plan.independent else ""))
    return t


def status_table(st: RunStatus) -> Table:
    t = Table(title=f"run {st.run}: [{STYLE.get(st.state, '')}]{st.state}[/]", title_justify="left")
    counted = ("completed", "cached", "skipped", "running", "pending", "failed", "cancelled", "lost", "missing")
    for col in ("stage", "state", "total", "done", *counted[1:], "jobs"):
        t.add_column(col, justify="left" if col in ("stage", "state", "jobs") else "right")
    for s in st.stages.values():
        c = s.counts
        total = f"{c['total']} ({len(s.shared)} shared)" if s.shared else str(c["total"])  # shared: a computing task's state
        t.add_row(s.name, f"[{STYLE.get(s.state, '')}]{s.state}[/]", total, *(str(c[k]) for k in counted),
                  ",".join(s.job_ids[-4:]) + (" …" if len(s.job_ids) > 4 else ""))
    return t


def watch(get_status: Callable[[], RunStatus], poll_s: float) -> RunStatus:
    """Refresh until the run is no longer going. A live table on a terminal, one line per change in logs."""
    if console.is_terminal:
        from rich.live import Live

        with Live(console=console, refresh_per_second=4) as live:
            while True:
                st = get_status()
                live.update(status_table(st))
                if st.exit_code != exitcodes.RUNNING:
                    return st
                time.sleep(poll_s)
    last = None
    while True:
        st = get_status()
        line = "  ".join(f"{s.name}:{s.counts['completed']}/{s.total}" for s in st.stages.values())
        if line != last:
            console.print(f"[{time.strftime('%H:%M:%S')}] {st.state:<9} {line}")
            last = line
        if st.exit_code != exitcodes.RUNNING:
            console.print(status_table(st))
            return st
        time.sleep(poll_s)
