"""Shared bits of the benchmarks: the dev cluster, the launcher CLI, timing."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"


def dev_cluster_env() -> dict:
    out = subprocess.run([str(ROOT / "scripts" / "dev-slurm"), "up"], capture_output=True, text=True, check=True).stdout
    conf = next(x for x in out.splitlines() if x.startswith("export SLURM_CONF=")).split("=", 1)[1].strip("'\"")
    return {**os.environ, "SLURM_CONF": conf}


def sh(argv, env, check=True) -> str:
    return subprocess.run(argv, env=env, capture_output=True, text=True, check=check).stdout


def launcher(args, env, cwd, check=True) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "launcher", *args], env=env, cwd=cwd, capture_output=True, text=True)
    if check and p.returncode != 0:
        raise SystemExit(f"launcher {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


@contextmanager
def partition_down(env, name="debug"):
    """Jobs queue but do not start: submission is measured, not the load of running tasks."""
    sh(["scontrol", "update", f"PartitionName={name}", "State=DOWN"], env)
    try:
        yield
    finally:
        sh(["scontrol", "update", f"PartitionName={name}", "State=UP"], env)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def median(xs):
    return statistics.median(xs)


def save(name: str, data: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    data = {"date": time.strftime("%Y-%m-%d"), "machine": "2 cores, 24 GiB, single-node dev Slurm 22.05", **data}
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=1) + "\n")
    print(json.dumps(data, indent=1))
