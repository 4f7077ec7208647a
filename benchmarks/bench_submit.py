"""Submission of a 200-point multirun of the 3-stage smoke pipeline on the dev cluster.

launcher: `launcher run -m pipeline=smoke cluster=dev 'pipeline.vars.scale=range(1,201)'
          ~pipeline.stages.checkpointing` end to end (interpreter start, Hydra composing 200 points,
          preflight, scripts, sbatch), one sbatch per stage.
loop:     what lab scripts do: for each point, for each stage, one `sbatch --parsable
          [--dependency=<kind>:$prev] --array=0-<tasks-1> --wrap true` (600 calls).

Both sides submit to a DOWN partition that the script creates in slurmctld's memory and deletes at
the end (jobs are accepted and queued, never started: the 2 cores measure submission, not running
tasks; partition debug is untouched), are timed with the same clock, and are scancel'ed by job id
right after each measurement.
--sbatch-latency-ms adds a delay to every sbatch of BOTH sides (PATH shim), to mimic a busy
production controller (this idle one answers in ~10 ms).
--before REV also times the launcher of an earlier commit (a `git worktree` of REV, run with the same
interpreter and PYTHONPATH on it), interleaved with the others; --no-loop leaves the loop out (at
10,000 points it is 30,000 sbatch calls).

    .venv/bin/python benchmarks/bench_submit.py [--points 200] [--repeat 3] [--sbatch-latency-ms 0 100]
                                                [--before REV] [--no-loop]
"""
import os
import subprocess
import argparse
import re
import shutil
import tempfile
from pathlib import Path

from common import (LAUNCHER, dev_cluster_env, down_partition, ledger, median, only_run, run, save, scancel, show,
                    timed, wait_for_room)

STAGES = [("shards", 4, None), ("reduce", 1, "afterok"), ("fanout", 2, "afterany")]  # smoke minus checkpointing
LOOP = r"""
set -euo pipefail
for p in $(seq 1 "$1"); do
  a=$(sbatch --parsable -p "$2" --array=0-3 --wrap true)
  b=$(sbatch --parsable -p "$2" --dependency=afterok:$a --array=0-0 --wrap true)
  c=$(sbatch --parsable -p "$2" --dependency=afterany:$b --array=0-1 --wrap true)
  echo "$a $b $c"
done
"""


def launcher_once(points: int, env, partition: str, code: str | None = None) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-submit-") as root:
        # an earlier commit runs as `python -m launcher` (the console script imports what the installed
        # version names); this one as the console script, as users run it
        argv0 = [str(Path(LAUNCHER).with_name("python")), "-m", "launcher"] if code else [LAUNCHER]
        t, p = timed(lambda: run([*argv0, "run", "-m", "pipeline=smoke", "cluster=dev",
                                  f"pipeline.vars.scale=range(1,{points + 1})", "~pipeline.stages.checkpointing",
                                  f"cluster.partition={partition}", f"run_root={root}"],
                                 {**env, "PYTHONPATH": code} if code else env, cwd=root))
        recs = ledger(only_run(Path(root)))
    scancel([r["job_id"] for r in recs], env)
    inner = re.search(r"submitted in ([\d.]+) s", p.stdout)
    return {"wall_s": t, "sbatch": len(recs), "tasks": sum(len(r["tasks"]) for r in recs),
            "inside_s": float(inner.group(1)) if inner else None}


def loop_once(points: int, env, partition: str) -> dict:
    t, p = timed(lambda: run(["bash", "-c", LOOP, "loop", str(points), partition], env))
    ids = p.stdout.split()
    scancel(ids, env)
    return {"wall_s": t, "sbatch": len(ids), "tasks": points * sum(n for _, n, _ in STAGES)}


def measure(args, env, partition: str, before: str | None) -> dict:
    rows = {"launcher": [], **({"launcher_before": []} if before else {}), **({} if args.no_loop else {"loop": []})}
    for _ in range(args.repeat):  # interleaved, so drift in the machine's load hits every side
        wait_for_room(env, 2 * args.points * len(STAGES))
        rows["launcher"].append(launcher_once(args.points, env, partition))
        if before:
            rows["launcher_before"].append(launcher_once(args.points, env, partition, before))
        if not args.no_loop:
            rows["loop"].append(loop_once(args.points, env, partition))
    out = {side: {"wall_s_median": median([r["wall_s"] for r in rs]), "wall_s_all": [round(r["wall_s"], 3) for r in rs],
                  "sbatch_calls": rs[0]["sbatch"], "array_tasks": rs[0]["tasks"]} for side, rs in rows.items()}
    for side in [s for s in rows if s.startswith("launcher")]:
        out[side]["inside_launcher_s_median"] = median([r["inside_s"] for r in rows[side]])
    if "loop" in out:
        out["loop_over_launcher"] = round(out["loop"]["wall_s_median"] / out["launcher"]["wall_s_median"], 2)
    return out


def worktree(rev: str, folder: str) -> str:
    """A checkout of `rev` of this repository (removed by the caller's temporary folder and `git worktree prune`)."""
    repo = Path(__file__).resolve().parents[1]
    subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach", "-q", folder, rev], check=True)
    return folder


def with_latency(env, ms: int, folder: str) -> dict:
    if not ms:
        return env
    shim = Path(folder) / "sbatch"
    shim.write_text(f"#!/bin/sh\nsleep {ms / 1000}\nexec {shutil.which('sbatch', path=env['PATH'])} \"$@\"\n")
    shim.chmod(0o755)
    return {**env, "PATH": f"{folder}:{env['PATH']}"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sbatch-latency-ms", type=int, nargs="+", default=[0])
    ap.add_argument("--before", help="also time the launcher of this git revision")
    ap.add_argument("--no-loop", action="store_true", help="leave out the sbatch loop")
    args = ap.parse_args()
    env = dev_cluster_env()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-submit-code-") as code, down_partition(env) as partition:
        before = worktree(args.before, os.path.join(code, "before")) if args.before else None
        try:
            for ms in args.sbatch_latency_ms:
                with tempfile.TemporaryDirectory() as shim_dir:
                    results.append({"added_sbatch_latency_ms": ms,
                                    **measure(args, with_latency(env, ms, shim_dir), partition, before)})
        finally:
            if before:
                subprocess.run(["git", "worktree", "remove", "--force", before], cwd=Path(__file__).resolve().parents[1])

    def cell(r, side, key="wall_s_median"):
        return r[side][key] if side in r else "-"

    show(f"submit: {args.points}-point multirun, 3 stages, median of {args.repeat} (s)",
         ["added sbatch latency", "launcher sbatch", "launcher wall", "(inside launcher)",
          f"launcher at {args.before or '-'}", "(inside)", "loop sbatch", "loop wall", "loop / launcher"],
         [[f"{r['added_sbatch_latency_ms']} ms", r["launcher"]["sbatch_calls"], r["launcher"]["wall_s_median"],
           r["launcher"]["inside_launcher_s_median"], cell(r, "launcher_before"),
           cell(r, "launcher_before", "inside_launcher_s_median"), cell(r, "loop", "sbatch_calls"), cell(r, "loop"),
           f"{r['loop_over_launcher']}x" if "loop_over_launcher" in r else "-"] for r in results])
    print("wrote", save("submit" if args.points == 200 else f"submit-{args.points}", {"points": args.points, "stages": [s for s, _, _ in STAGES], "repeat": args.repeat,
                                   "before": args.before, "runs": results}))


if __name__ == "__main__":
    main()
