"""What a campaign report is made of, for `launcher report` (a static page) and `launcher dashboard`
(the same tables and curves, live): the runs a target names, their evaluation result rows, and the
cost per variant. Reads the run directories as they are now (results appear while training goes on).

Result files: stages/<stage>/evals/<point>/step-<N>.json (kind=evaluate), turned into report rows
(launcher/reports/report.py COLUMNS) by jobs.adapters.eval_results.rows."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from launcher.errors import LauncherError, NotFound

if TYPE_CHECKING:
    from launcher.run.rundir import Run

RESULTS = "*/evals/*/step-*.json"  # under <run>/stages/


def resolve(target: str, root: Path) -> Tuple[List["Run"], str]:
    """(runs, title): a run id, run directory or `latest` (the title names the run it resolves to, and
    its campaign), else every run under `root` whose run.json names campaign `target`. NotFound naming
    the campaigns there when it is neither."""
    from launcher.run.rundir import list_runs, resolve_run

    try:
        run = resolve_run(target, root)
        campaign = run.meta.get("campaign")
        return [run], f"run {run.id}" + (f" (campaign {campaign})" if campaign else "")
    except LauncherError:
        runs = [r for r in list_runs(root) if r.meta.get("campaign") == target]
    if not runs:
        raise NotFound(f"{target!r} is neither a run nor a campaign under {root} "
                       f"(campaigns: {', '.join(sorted({r.meta.get('campaign', '') for r in list_runs(root)}))})")
    return runs, f"campaign {target} ({len(runs)} run(s))"


def result_files(runs: List["Run"]) -> List[Path]:
    """Every evaluation result file of the runs, sorted."""
    return sorted(p for r in runs for p in (r.path / "stages").glob(RESULTS))


def result_rows(files: List[Path]) -> List[Dict[str, Any]]:
    """The report's rows of these result files (a file being rewritten is read next time)."""
    from jobs.adapters.eval_results import rows

    return [row for p in files for row in stage_rows(p, rows(json.loads(p.read_text())), files)]


def stage_rows(path: Path, rows: list, files: list) -> list:
    """The report's rows of one result file (stages/<stage>/evals/<point>/step-N.json): when the runs have
    more than one evaluation stage (the demo scores the base and the aligned model), each row's variant
    names its stage, so their curves and signal rows stay apart instead of merging into one."""
    stages = {f.parents[2].name for f in files}
    if len(stages) < 2:
        return rows
    stage = path.parents[2].name
    return [dict(r, variant=stage if r["variant"] == "all" else f"{stage} · {r['variant']}") for r in rows]


def costs(runs: List["Run"], quiet: bool = False) -> Optional[Dict[str, Dict[str, Any]]]:
    """The cost per variant (launcher/run/usage.py cost_per_variant: one accounting query), or None with a
    note on stderr (none when `quiet`) when the scheduler cannot say."""
    from launcher.run.usage import cost_per_variant

    try:
        return cost_per_variant(runs)
    except LauncherError as e:
        if not quiet:
            print(f"note: no cost per variant in the report: {e}", file=sys.stderr)
        return None
