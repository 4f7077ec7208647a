"""`launcher sync <run>`: upload a run's offline tracked runs from the login node (compute nodes are often
offline: tracking.mode=offline writes them under the run; docs/tracking.md).

- W&B: `wandb sync` with the stage's own interpreter (wandb is in the stage environment, not in the
  launcher's install), one call per tracked stage, with the submitting shell's WANDB_API_KEY / ~/.netrc.
- MLflow (`--mlflow-uri URI`): each stage's file store copied run by run into URI
  (jobs/adapters/mlflow_store.py copy_store; runs copied before are skipped): in this process when the login
  node has mlflow (the `tracking` extra: pip install '.[tracking]'), else with the stage's interpreter, which
  has it (preflight checked). The submitting shell's MLFLOW_TRACKING_TOKEN / _USERNAME / _PASSWORD reach the
  server. Nothing on the compute-node side changes."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import jobs
from jobs.adapters import tracking as node
from launcher.errors import LauncherError

EXTRA = "pip install '.[tracking]' (mlflow-skinny) in the launcher's environment"


def offline_runs(run) -> List[Dict[str, Any]]:
    """Per tracked stage of `run` (launcher.run.rundir.Run) whose backend writes offline runs: {"stage",
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


def copy_mlflow(store: Path, uri: str, python: str) -> Dict[str, int]:
    """Copy one stage's file store into `uri`: in this process when mlflow imports here, else with the
    stage's interpreter (`python -m jobs.adapters.mlflow_store`). LauncherError when neither can."""
    from jobs.adapters import mlflow_store

    src = f"file:{store}"
    if importlib.util.find_spec("mlflow") is not None:
        return mlflow_store.copy_store(src, uri)
    if not Path(python).is_file():
        raise LauncherError(f"copying {store} needs mlflow: the launcher's environment has none and the stage's "
                            f"interpreter {python} is not a file here; {EXTRA}")
    code_root = str(Path(jobs.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [code_root, os.environ.get("PYTHONPATH")])),
           "MLFLOW_ALLOW_FILE_STORE": "true"}
    p = subprocess.run([python, "-m", "jobs.adapters.mlflow_store", src, uri], capture_output=True, text=True,
                       env=env)
    if p.returncode != 0:
        raise LauncherError(f"copying {store} to {uri} with {python} failed (exit {p.returncode}): "
                            f"{p.stderr.strip()[-2000:]}\nwithout mlflow in that environment: {EXTRA}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def sync_mlflow(runs: List[Dict[str, Any]], uri: str | None, dry_run: bool) -> None:
    """Each MLflow stage's store: copied to `uri`, or listed (no URI, or a dry run)."""
    for r in runs:
        if r["backend"] != "mlflow":
            continue
        if not r["paths"]:
            print(f"stage {r['stage']}: no MLflow file store yet")
        for store in r["paths"]:
            if not uri or dry_run:
                print(f"stage {r['stage']}: MLflow file store {store}" + (f": would copy to {uri}" if uri else
                      ": not copied (give --mlflow-uri URI, the tracking server to copy it to)"))
                continue
            c = copy_mlflow(store, uri, r["python"])
            print(f"stage {r['stage']}: MLflow file store {store} -> {uri}: {c['copied']} run(s) copied, "
                  f"{c['skipped']} copied before", flush=True)


def cmd_sync(args) -> int:
    from launcher.run.rundir import resolve_run

    run = resolve_run(args.target, args.root)
    runs = offline_runs(run)
    if not runs:
        print(f"run {run.id}: no stage tracks to wandb or mlflow offline (nothing to sync)")
        return 0
    for r in runs:
        if r["backend"] == "wandb" and not r["paths"]:
            print(f"stage {r['stage']}: no W&B offline run yet")
    sync_mlflow(runs, args.mlflow_uri, args.dry_run)
    failed = 0
    for cmd in sync_commands(runs):
        print(("would run: " if args.dry_run else "") + " ".join(cmd), flush=True)
        if not args.dry_run:
            failed += subprocess.run(cmd).returncode != 0
    return 1 if failed else 0


def register(sub) -> None:
    """The `sync` verb's parser (launcher/cli.py calls this)."""
    sp = sub.add_parser("sync", help="upload a run's offline W&B runs (wandb sync) or copy its MLflow file stores "
                        "to a tracking server (--mlflow-uri)",
                        description="From a machine that reaches W&B or the MLflow server (the login node): `wandb "
                        "sync` of every offline run the run's tracked stages wrote (tracking.backend=wandb, mode "
                        "offline), with the stage environment's python and your WANDB_API_KEY; with --mlflow-uri, "
                        "every run of the MLflow file stores (tracking.backend=mlflow, mode offline) copied to that "
                        "tracking URI (runs copied before are skipped).")
    sp.add_argument("target", help="run id, run dir or `latest`")
    sp.add_argument("--root", type=Path, help="run root to look in (default: $LAUNCHER_RUN_ROOT or ./runs)")
    sp.add_argument("--dry-run", action="store_true", help="print the wandb sync commands and the stores to copy; "
                    "do neither")
    sp.add_argument("--mlflow-uri", help="the MLflow tracking URI to copy the file stores to (http(s)://..., "
                    "databricks, or file:/path); uses mlflow on this machine (the `tracking` extra) or the stage's "
                    "interpreter")
