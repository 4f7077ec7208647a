"""A 200-point multirun of the 3-stage smoke pipeline on the dev cluster: `launcher run` (one
sbatch per stage) next to a shell loop with one `sbatch --parsable` per (point, stage), the way
most lab scripts submit. Both submit into a DOWN partition (queued, not started), then cancel.

sbatch answers in ~8 ms on this idle single-node controller; on a shared production controller it
takes tens to hundreds of ms. --latency-ms adds that delay to every sbatch call of BOTH sides
(a PATH shim), to show how each scales with the controller's response time.

    .venv/bin/python benchmarks/bench_submit.py [--points 200] [--repeat 3] [--latency-ms 0 50]
"""
import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

from common import dev_cluster_env, launcher, median, partition_down, save, sh, timed

LOOP = r"""
set -euo pipefail
ids=()
for p in $(seq 1 "$1"); do
  a=$(sbatch --parsable --array=0-3 --time=5 --wrap "echo shard \$SLURM_ARRAY_TASK_ID of point $p")
  b=$(sbatch --parsable --array=0 --time=5 --dependency=afterok:$a --wrap "echo reduce $p")
  c=$(sbatch --parsable --array=0-1 --time=5 --dependency=afterany:$b --wrap "echo fanout $p")
  ids+=("$a" "$b" "$c")
done
echo "${ids[@]}"
"""


def sbatch_shim(folder: Path, latency_ms: int) -> Path:
    shim = folder / "sbatch"
    shim.write_text(f"#!/bin/sh\nsleep {latency_ms / 1000}\nexec {shutil.which('sbatch')} \"$@\"\n")
    shim.chmod(0o755)
    return folder


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--latency-ms", type=int, nargs="+", default=[0, 50])
    args = ap.parse_args()
    base_env = dev_cluster_env()
    results = []
    for latency in args.latency_ms:
        with tempfile.TemporaryDirectory() as shim_dir:
            env = dict(base_env)
            if latency:
                env["PATH"] = f"{sbatch_shim(Path(shim_dir), latency)}{os.pathsep}{env['PATH']}"
            results.append(measure(args, env, latency))
    save("submit", {"runs": results})


def measure(args, env, latency):
    rows = {"launcher": [], "loop": []}
    calls = {}
    with partition_down(env):
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory() as tmp:
                sweep = f"pipeline.vars.scale=range(1,{args.points + 1})"
                t, _ = timed(lambda: launcher(["run", "-m", "pipeline=smoke", "cluster=dev", sweep,
                                               "~pipeline.stages.checkpointing", f"run_root={tmp}"], env, tmp))
                run = next(p for p in Path(tmp).iterdir() if (p / "run.json").exists())
                ledger = [json.loads(x) for x in (run / "submissions.jsonl").read_text().splitlines()]
                calls["launcher"] = len(ledger)
                calls["launcher_tasks"] = sum(len(r["tasks"]) for r in ledger)
                sh(["scancel", *[r["job_id"] for r in ledger]], env)
                rows["launcher"].append(t)
            t, out = timed(lambda: sh(["bash", "-c", LOOP, "loop", str(args.points)], env))
            ids = out.split()
            calls["loop"] = len(ids)
            sh(["scancel", *ids], env)
            rows["loop"].append(t)
    res = {"points": args.points, "stages": 3, "added_sbatch_latency_ms": latency, "sbatch_calls": calls,
           "wall_s_median": {k: round(median(v), 3) for k, v in rows.items()},
           "wall_s_all": {k: [round(x, 3) for x in v] for k, v in rows.items()}}
    res["speedup"] = round(res["wall_s_median"]["loop"] / res["wall_s_median"]["launcher"], 1)
    return res


if __name__ == "__main__":
    main()
