"""`launcher sync <run>`: upload a run's offline W&B runs from the login node (compute nodes are often
offline: tracking.mode=offline writes them under the run; docs/tracking.md). `wandb sync` runs with the
stage's own interpreter (wandb is in the stage environment, not in the launcher's install), one call per
tracked stage, with the submitting shell's WANDB_API_KEY / ~/.netrc. MLflow file stores are not copied to a
server yet (listed, not synced). Nothing on the compute-node side changes."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

from jobs.adapters import tracking as node


def offline_runs(run) -> List[Dict[str, Any]]:
    """Per tracked stage of `run` (launcher.rundir.Run) whose backend writes offline runs: {"stage",
    "backend", "python" (the stage's interpreter), "paths" (W&B offline-run folders, or the MLflow store)}."""
    plan, out = run.plan(), []
    for name, s in plan.stages.items():
        t = s.tracking or {}
        if t.get("backend") not in ("wandb", "mlflow") or t.get("mode") == "online":
            continue
        base = node.base_dir({"tracking": t, "run_id": run.id, "run_dir": str(run.path), "stage": name})
        paths = (sorted(base.glob("*/wandb/offline-run-*")) if t["backend"] == "wandb"
                 else [base / "mlruns"] if (base / "mlruns").is_dir() else [])
        out.append({"stage": name, "backend": t["backend"], "python": (s.environment or {}).get("python") or
                    sys.executable, "paths": paths})
    return out


def sync_commands(runs: List[Dict[str, Any]]) -> List[List[str]]:
    """The `wandb sync` command of each W&B stage that has offline runs (with its interpreter)."""
    return [[r["python"], "-m", "wandb", "sync", *map(str, r["paths"])] for r in runs
            if r["backend"] == "wandb" and r["paths"]]


def cmd_sync(args) -> int:
    from launcher.rundir import resolve_run

    run = resolve_run(args.target, args.root)
    runs = offline_runs(run)
    if not runs:
        print(f"run {run.id}: no stage tracks to wandb or mlflow offline (nothing to sync)")
        return 0
    for r in runs:
        if r["backend"] == "mlflow":
            print(f"stage {r['stage']}: MLflow file store {', '.join(map(str, r['paths'])) or '(none yet)'}: "
                  f"not synced (copying a store to a tracking server is not built; docs/tracking.md)")
        elif not r["paths"]:
            print(f"stage {r['stage']}: no W&B offline run yet")
    failed = 0
    for cmd in sync_commands(runs):
        print(("would run: " if args.dry_run else "") + " ".join(cmd), flush=True)
        if not args.dry_run:
            failed += subprocess.run(cmd).returncode != 0
    return 1 if failed else 0


def register(sub) -> None:
    """The `sync` verb's parser (launcher/cli.py calls this)."""
    sp = sub.add_parser("sync", help="upload a run's offline W&B runs (wandb sync, with the stage's interpreter)",
                        description="From a machine that reaches W&B (the login node): `wandb sync` of every "
                        "offline run the run's tracked stages wrote (tracking.backend=wandb, mode offline), with "
                        "the stage environment's python and your WANDB_API_KEY. MLflow stores are listed, not copied.")
    sp.add_argument("target", help="run id, run dir or `latest`")
    sp.add_argument("--root", type=Path, help="run root to look in (default: $LAUNCHER_RUN_ROOT or ./runs)")
    sp.add_argument("--dry-run", action="store_true", help="print the wandb sync commands, run none")
