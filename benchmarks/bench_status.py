"""`launcher status` on live multiruns of the smoke pipeline on the dev cluster. The main size,
500 points, has 4,000 array tasks in 5 sbatch calls: shards 2,000 (two chunks at MaxArraySize
1001), reduce 500, fanout 1,000, checkpointing 500. A 25-point run (200 tasks) goes first: it
finishes within a minute, so it also shows status on a completed run.

For each run and phase (just submitted; +--mid-s; finished, or still going at +--complete-s and
then after `launcher cancel`): wall time of `launcher status <run> --json` (subprocess, median of
--repeat), and the Slurm client calls ONE status makes, counted in-process (ops.run_backend +
status.collect, then backend.calls), with collect's own time. Every run is cancelled at the end.
Baseline: the per-task polling of many lab scripts (one `sacct -j <job>_<index>` per task), timed
on --sample tasks of the run and scaled to all of its tasks.

    .venv/bin/python benchmarks/bench_status.py [--points 25 500] [--repeat 5] [--mid-s 30]
        [--complete-s 180] [--sample 100]
"""
import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from common import LAUNCHER, dev_cluster_env, median, only_run, run, save, show, timed, wait_for_room

from launcher.run import ops, status
from launcher.run.rundir import Run


def measure(r: Run, env, repeat: int) -> dict:
    walls = [timed(lambda: run([LAUNCHER, "status", str(r.path), "--json"], env, check=False))[0]
             for _ in range(repeat)]
    backend = ops.run_backend(r)  # the run's cluster, and whether it keeps accounting (run.json)
    t, st = timed(lambda: status.collect(r, backend))
    counts = {k: sum(s.counts[k] for s in st.stages.values()) for k in status.STATES}
    return {"state": st.state, "status_wall_s_median": median(walls), "collect_in_process_s": round(t, 3),
            "slurm_calls": dict(backend.calls), "tasks": {k: v for k, v in counts.items() if v}}


def finished(r: Run) -> bool:
    return status.collect(r, ops.run_backend(r)).state in ("COMPLETED", "FAILED")


def per_task_polling(r: Run, env, sample: int) -> dict:
    tasks = [(rec["job_id"], t - rec["offset"]) for rec in r.submissions() for t in rec["tasks"]]
    picked = tasks[:: max(1, len(tasks) // sample)][:sample]
    poll = ["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j"]
    t, _ = timed(lambda: [run([*poll, f"{j}_{i}"], env) for j, i in picked])
    return {"sacct_calls": len(tasks), "timed_on": len(picked), "wall_s_scaled": round(t / len(picked) * len(tasks), 1)}


def one_run(points: int, args, env) -> dict:
    wait_for_room(env, 8 * points)
    root = Path(tempfile.mkdtemp(prefix="bench-status-"))
    t_submit, _ = timed(lambda: run([LAUNCHER, "run", "-m", "pipeline=smoke", "cluster=dev",
                                     f"pipeline.vars.scale=range(1,{points + 1})", f"run_root={root}"], env))
    r, t0 = Run(only_run(root)), time.time()
    phases = {}
    try:
        phases["just submitted"] = measure(r, env, args.repeat)
        while time.time() - t0 < args.mid_s and not finished(r):
            time.sleep(2)
        if not finished(r):
            phases[f"+{time.time() - t0:.0f} s"] = measure(r, env, args.repeat)
        while time.time() - t0 < args.complete_s and not finished(r):
            time.sleep(10)
        done = finished(r)
        phases[f"{'finished' if done else 'still going'} (+{time.time() - t0:.0f} s)"] = measure(r, env, args.repeat)
    finally:
        run([LAUNCHER, "cancel", str(r.path)], env)
    if not done:
        phases["after launcher cancel"] = measure(r, env, args.repeat)
    out = {"points": points, "array_tasks": sum(s.total_tasks for s in r.plan().stages.values()),
           "sbatch_calls": len(r.submissions()), "submit_wall_s": round(t_submit, 3), "phases": phases,
           "baseline_per_task_sacct": per_task_polling(r, env, args.sample)}
    shutil.rmtree(root, ignore_errors=True)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, nargs="+", default=[25, 500])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--mid-s", type=float, default=30, help="when to take the mid-run snapshot")
    ap.add_argument("--complete-s", type=float, default=180, help="how long to wait for a run to finish")
    ap.add_argument("--sample", type=int, default=100, help="tasks the per-task sacct baseline is timed on")
    args = ap.parse_args()
    env = dev_cluster_env()
    os.environ["SLURM_CONF"] = env["SLURM_CONF"]  # for the in-process backend
    runs = [one_run(p, args, env) for p in args.points]
    show(f"status: one `launcher status --json` (wall: median of {args.repeat}) on live smoke multiruns",
         ["run", "phase", "tasks by state", "status wall", "collect in-process", "Slurm calls / status"],
         [[f"{x['points']} points, {x['array_tasks']} tasks, {x['sbatch_calls']} sbatch", name,
           " ".join(f"{k}={v}" for k, v in p["tasks"].items()), f"{p['status_wall_s_median']} s",
           f"{p['collect_in_process_s']} s", " ".join(f"{k}={v}" for k, v in p["slurm_calls"].items()) or "none"]
          for x in runs for name, p in x["phases"].items()]
         + [[f"{x['points']} points, {x['array_tasks']} tasks", "baseline: one sacct per task", "",
             f"{x['baseline_per_task_sacct']['wall_s_scaled']} s", "", f"sacct={x['array_tasks']}"] for x in runs])
    print("wrote", save("status", {"repeat": args.repeat, "runs": runs}))


if __name__ == "__main__":
    main()
