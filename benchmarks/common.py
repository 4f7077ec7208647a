"""Shared bits of the benchmarks: the dev cluster, the launcher CLI, timing, tables, results."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
BIN = ROOT / ".venv" / "bin"
LAUNCHER = str(BIN / "launcher")  # the console script, as users run it
PYTHON = str(BIN / "python")
MACHINE = "2 cores, 24 GiB, single-node dev Slurm 22.05 (scripts/dev-slurm: 16 fake CPUs, MaxArraySize 1001)"


def dev_cluster_env() -> dict:
    """`scripts/dev-slurm up` (idempotent) → the environment Slurm clients need."""
    out = run([str(ROOT / "scripts" / "dev-slurm"), "up"], os.environ).stdout
    conf = next(x for x in out.splitlines() if x.startswith("export SLURM_CONF=")).split("=", 1)[1].strip("'\"")
    return {**os.environ, "SLURM_CONF": conf}


def run(argv, env, cwd=None, check=True) -> subprocess.CompletedProcess:
    p = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True)
    if check and p.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} ... failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    return p


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def median(xs) -> float:
    return round(statistics.median(xs), 3)


def only_run(run_root: Path) -> Path:
    """The one run directory a `launcher run` made under run_root."""
    (path,) = [p for p in run_root.iterdir() if (p / "run.json").exists()]
    return path


def ledger(run_dir: Path) -> list:
    lines = (run_dir / "submissions.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "job_id" in r]


def scancel(ids, env) -> None:
    if ids:
        run(["scancel", *ids], env)


def wait_for_room(env, need: int, timeout: float = 600) -> None:
    """Wait until `need` more job records fit under MaxJobCount (cancelled jobs stay MinJobAge)."""
    conf = run(["scontrol", "show", "config"], env).stdout
    cap = int(next(x for x in conf.splitlines() if x.startswith("MaxJobCount")).split("=")[1])
    t0 = time.time()
    while len(run(["squeue", "-h", "-t", "all", "-o", "%i"], env).stdout.split()) + need > 0.8 * cap:
        if time.time() - t0 > timeout:
            raise SystemExit(f"the dev cluster holds too many job records for {need} more (MaxJobCount {cap})")
        time.sleep(10)


@contextmanager
def down_partition(env, name="bench-held"):
    """A partition that exists only in slurmctld's memory, State=DOWN, on the dev node: jobs sent
    there are accepted and queued but never start, and partition debug (other users) is untouched."""
    run(["scontrol", "create", f"PartitionName={name}", "Nodes=ALL", "State=DOWN"], env)
    try:
        yield name
    finally:
        run(["scontrol", "delete", f"PartitionName={name}"], env)


def show(title: str, header, rows) -> None:
    t = Table(title=title, title_justify="left")
    for h in header:
        t.add_column(h, justify="left" if h == header[0] else "right")
    for r in rows:
        t.add_row(*map(str, r))
    Console(width=150).print(t)


def code_version() -> dict:
    """The launcher code measured: commit, and files changed since (others edit the tree meanwhile)."""
    git = lambda *a: subprocess.run(["git", "-C", str(ROOT), *a], capture_output=True, text=True).stdout  # noqa: E731
    return {"commit": git("rev-parse", "--short", "HEAD").strip(),
            "uncommitted": [x[3:] for x in git("status", "--porcelain").splitlines() if "benchmarks/" not in x]}


def save(name: str, data: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    head = {"date": time.strftime("%Y-%m-%d"), "machine": MACHINE, "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
            "code": code_version()}
    path.write_text(json.dumps({**head, **data}, indent=1) + "\n")
    return path
