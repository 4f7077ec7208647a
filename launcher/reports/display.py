"""Tables for plan and status, and the live progress view of `wait=true`. Every table of the CLI goes
through `show`: drawn by rich to the terminal's width on a terminal, plain text otherwise (one row per
line, columns separated by a tab: `cut -f2`, `awk -F'\t'`), or as --format / $LAUNCHER_FORMAT (table|plain) say."""
from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Callable, List, Optional

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from launcher import exitcodes
from launcher.plan.model import Plan
from launcher.plan.render import JobRequest
from launcher.run.status import RunStatus

if TYPE_CHECKING:
    from launcher.run.backoff import Backoff


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """rich exits 1 on a closed stdout, which is "the run failed": launcher.cli.main exits 141."""
        self.quiet = True
        raise BrokenPipeError


# Not a terminal: lines are not wrapped at a made-up width (a log, a pipe: one line per line).
_TTY = Console().is_terminal
console = _Console(highlight=False, width=None if _TTY else 160, soft_wrap=not _TTY)
STYLE = {"COMPLETED": "green", "SKIPPED": "dim", "RUNNING": "cyan", "PENDING": "yellow", "FAILED": "red"}
FORMATS = ("table", "plain")
# The status table's count columns on a terminal, squeue-short (plain output keeps the full names).
SHORT = {"running": "run", "pending": "pend", "failed": "fail", "cancelled": "canc", "skipped": "skip",
         "missing": "miss"}


FORMAT = ""  # the command line's --format (table|plain); '' when not given


def plain_output() -> bool:
    """Tables as plain text: --format plain (FORMAT), else $LAUNCHER_FORMAT=plain, else (neither given)
    when stdout is not a terminal."""
    fmt = FORMAT or os.environ.get("LAUNCHER_FORMAT", "")
    if fmt in FORMATS:
        return fmt == "plain"
    return not console.is_terminal


def _cell(x) -> str:
    """A table cell as plain text: rich markup and styles dropped, tabs and newlines made spaces, '-' for
    an empty cell (so that whitespace-splitting awk still counts the columns right)."""
    text = Text.from_markup(x).plain if isinstance(x, str) else x.plain if isinstance(x, Text) else str(x)
    return " ".join(text.replace("\t", " ").split()) or "-"


def plain_table(t: Table) -> str:
    """A rich Table as plain text: '# <title>', a header row, one line per row, '# <caption>'; the
    columns separated by one tab."""
    lines = [f"# {_cell(t.title)}"] if t.title else []
    lines.append("\t".join(_cell(c.header) for c in t.columns))
    cols = [list(c.cells) for c in t.columns]
    lines += ["\t".join(_cell(col[i]) for col in cols) for i in range(t.row_count)]
    if t.caption:
        lines.append(f"# {_cell(t.caption)}")
    return "\n".join(lines)


def fit(t: Table, width: Optional[int] = None, short: int = 14, least: int = 10) -> Table:
    """Fit a table to the terminal (`width`, default the console's) by wrapping only its long columns: a
    column whose header and cells are all at most `short` characters never wraps and keeps its width
    (rich would otherwise squeeze every column alike and cut 'RUNNING' to 'RU…'); a longer one keeps
    `least` characters at least and wraps (or ellipsizes, as the column says) in what is left. When
    even that does not fit, the table is left to rich's own squeezing."""
    widths = [max([len(_cell(c.header))] + [len(_cell(x)) for x in c.cells]) for c in t.columns]
    need = sum(w if w <= short else least for w in widths) + 2 * len(widths) + 2
    if need > (width or console.width):
        return t
    for c, w in zip(t.columns, widths):
        if w <= short:
            c.no_wrap, c.min_width = True, w
        else:
            c.min_width = max(c.min_width or 0, least)
    return t


def show(x) -> None:
    """Print a table (or any renderable) the way the output wants it: rich on a terminal, fitted to
    its width (fit), plain text (plain_table) when piped or with LAUNCHER_FORMAT=plain. A string is
    printed as it is."""
    if isinstance(x, Table) and plain_output():
        print(plain_table(x), flush=True)
    elif isinstance(x, str) and plain_output():
        print(Text.from_markup(x).plain, flush=True)
    else:
        console.print(fit(x) if isinstance(x, Table) else x)


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
        if s.distinct_points != s.points:  # equal content keys: one task set per key (launcher/plan/keys.py)
            tasks += f" ({s.points} points)"
        if s.cached:  # another run computed these points' keys (launcher/run/cache.py): not submitted
            flying = sum(1 for c in s.cached.values() if c.get("jobs"))  # or is computing them (inflight.py)
            tasks += f", {len(s.cached)} cached" + (f" ({flying} in flight)" if flying else "")
        if s.throttle:
            tasks += f" %{s.throttle}"
        deps = ", ".join([f"{d.parent}:{d.kind}" + (f" (declared {d.declared}; shared points: whole array)"
                                                    if d.note == "shared" else
                                                    f" (declared {d.declared})" if d.kind != d.declared else "")
                          for d in s.deps] + [f"job {j}:{k}" for j, k in s.external.items()]
                         + [f"{j}:{k} (in flight)" for j, k in s.inflight.items()]) or "-"
        if s.singleton:
            deps += " +singleton"
        n_sbatch = sum(1 for r in requests if r.stage == name)
        t.add_row(name, s.kind, tasks, str(n_sbatch), ", ".join(res), deps, f"{s.gpu_hours:.1f}", s.hash)
    t.caption = (f"{len(requests)} sbatch call(s); GPU-hours upper bound {plan.gpu_hours:.1f} "
                 f"(every task at its time limit); MaxArraySize chunk {chunk_size}"
                 + ("; sweep.independent: every stage per point, each point waits on its own parents"
                    if plan.independent else ""))
    return t


def status_table(st: RunStatus, plain: bool = None) -> Table:
    """One row per stage: state, task counts, its jobs, why its pending tasks wait and the progress of
    a running training task (status_view). Plain (piped; default: plain_output()): every count column,
    always in the same order, for awk/cut. On a terminal: 'done' as completed/total and only the count
    columns that are not 0 in every stage, so that the table fits the terminal."""
    from launcher.run.status_view import pending_summary, stage_progress

    plain = plain_output() if plain is None else plain
    t = Table(title=f"run {st.run}: [{STYLE.get(st.state, '')}]{st.state}[/]", title_justify="left",
              **({} if plain else {"box": box.SIMPLE_HEAD, "pad_edge": False, "collapse_padding": True}))
    counted = ("completed", "cached", "skipped", "running", "pending", "failed", "cancelled", "lost", "missing")
    shown = counted[1:] if plain else [k for k in counted[1:] if any(s.counts[k] for s in st.stages.values())]
    for col in ("stage", "state", *(("total", "done") if plain else ("done",)), *shown, "jobs"):
        t.add_column(col if plain else SHORT.get(col, col),
                     justify="left" if col in ("stage", "state", "jobs") else "right")
    t.add_column("waiting", overflow="fold")
    t.add_column("progress", overflow="fold")
    now = time.time()
    for s in st.stages.values():
        c = s.counts
        # shared: tasks of points whose content key an earlier point has (they read its output)
        shared = f" ({len(s.shared)} shared)" if s.shared else ""
        done = [str(c["total"]), str(c["completed"])] if plain else [f"{c['completed']}/{c['total']}{shared}"]
        # Scheduler reasons and hostlists hold brackets ('ReqNodeNotAvail, UnavailableNodes:gpu[1-2]'):
        # escaped, so rich shows them rather than reading them as markup.
        t.add_row(escape(s.name), f"[{STYLE.get(s.state, '')}]{s.state}[/]", *done, *(str(c[k]) for k in shown),
                  ",".join(s.job_ids[-4:]) + (" …" if len(s.job_ids) > 4 else ""), escape(pending_summary(s)),
                  escape(stage_progress(st.path, s, now)))
    return t


def fingerprint(st: RunStatus) -> tuple:
    """What a watcher compares between answers: every task's state and every pending task's reason."""
    return tuple((s.name, tuple(sorted(s.tasks.items())), tuple(sorted(s.reasons.items()))) for s in st.stages.values())


def watch(get_status: Callable[[float], RunStatus], backoff: "Backoff", tick_s: float) -> RunStatus:
    """Refresh until the run is no longer going. A live table on a terminal, one line per change in logs
    (completed/total per stage, and why its pending tasks wait). Every `tick_s` the run directory is
    read again (markers, progress); `get_status(max_age_s)` asks the scheduler only when the run's
    shared answer is older than the backoff's interval (launcher/run/backoff.py, status_cache.py), which
    grows while nothing changes and drops back at the first change."""
    from launcher.run.backoff import Paced
    from launcher.run.status_view import pending_summary

    step = Paced(get_status, fingerprint, backoff)
    if console.is_terminal:
        from rich.live import Live

        with Live(console=console, refresh_per_second=4) as live:
            while True:
                st = step()
                live.update(fit(status_table(st)))
                if st.exit_code != exitcodes.RUNNING:
                    return st
                time.sleep(tick_s)
    last = None
    while True:
        st = step()
        line = "  ".join(f"{s.name}:{s.counts['completed']}/{s.total}"
                         + (f" ({w})" if (w := pending_summary(s)) else "") for s in st.stages.values())
        if line != last:
            console.print(f"[{time.strftime('%H:%M:%S')}] {st.state:<9} {line}", markup=False)
            last = line
        if st.exit_code != exitcodes.RUNNING:
            show(status_table(st))
            return st
        time.sleep(tick_s)
