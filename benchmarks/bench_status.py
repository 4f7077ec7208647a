"""`launcher status` on a run of 2,000 array tasks (two chunks at MaxArraySize 1001): how many Slurm
client calls one status makes, and its wall time, next to the per-task polling many lab scripts do
(one `sacct -j <job>_<task>` per task). Measured while every task is pending (partition DOWN) and
after the run was cancelled.

    .venv/bin/python benchmarks/bench_status.py [--tasks 2000] [--repeat 5]
"""
import argparse
import tempfile
from pathlib import Path

from common import dev_cluster_env, launcher, median, partition_down, save, sh, timed

from launcher import ops
from launcher.rundir import Run
from launcher.status import collect


def status_calls(run: Run, env) -> dict:
    import os

    os.environ["SLURM_CONF"] = env["SLURM_CONF"]
    backend = ops.backend_for(run.plan().cluster, run.path)
    st = collect(run, backend)
    return {"calls": dict(backend.calls), "counts": {s.name: s.counts for s in st.stages.values()}}


def per_task_polling(run: Run, env) -> float:
    ledger = run.submissions()
    t, _ = timed(lambda: [sh(["sacct", "-X", "-n", "-P", "-o", "State", "-j", f"{r['job_id']}_{t - r['offset']}"], env)
                          for r in ledger for t in r["tasks"]])
    return t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    env = dev_cluster_env()
    out = {"tasks": args.tasks}
    with tempfile.TemporaryDirectory() as tmp, partition_down(env):
        launcher(["run", "pipeline=smoke", "cluster=dev", f"pipeline.stages.shards.tasks={args.tasks}",
                  "pipeline.stages.shards.throttle=null", "~pipeline.stages.reduce", "~pipeline.stages.fanout",
                  "~pipeline.stages.checkpointing", f"run_root={tmp}"], env, tmp)
        run = Run(next(p for p in Path(tmp).iterdir() if (p / "run.json").exists()))
        out["sbatch_calls"] = len(run.submissions())
        for phase in ("pending", "cancelled"):
            if phase == "cancelled":
                launcher(["cancel", run.id, "--root", tmp], env, tmp)
            times = [timed(lambda: launcher(["status", run.id, "--json", "--root", tmp], env, tmp, check=False))[0]
                     for _ in range(args.repeat)]
            out[phase] = {"status_wall_s_median": round(median(times), 3), **status_calls(run, env)}
        out["baseline_per_task_sacct_s"] = round(per_task_polling(run, env), 2)
        out["baseline_sacct_calls"] = args.tasks
    save("status", out)


if __name__ == "__main__":
    main()
