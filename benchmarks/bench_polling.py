"""Scheduler queries per hour made by the watchers of one run, ours next to submitit's, on the same
jobs, in one benchmark run on the dev cluster (issue: "Polling that a site admin accepts").

One run of a one-stage pipeline whose --tasks array tasks sleep --duration-s seconds (default 1800,
the issue's 30-minute run). Each watcher runs in its own process with its own PATH shim in front of
sacct/squeue/scontrol/sacctmgr, which logs every call with the watcher's name before running the
real client, so the counts are what slurmctld/slurmdbd really received:

- `ours: wait=true`: `launcher run … wait=true` (its submission's scontrol/sacctmgr calls are counted
  apart: they happen once), then its live table until the run ends;
- `ours: status --watch` ×2: two `launcher status RUN --watch` started right after submission;
  every watcher of a run shares one cached answer per interval (launcher/run/status_cache.py), so the
  three together should cost about what one costs;
- `submitit watcher`: submitit's own SlurmJob objects for the same array tasks, waited on the way
  hydra-submitit-launcher's users wait (`job.wait()`: done() in a loop, its InfoWatcher asking sacct
  at min(60 s, max(2 s, age/2)): submitit/core/core.py InfoWatcher.update_if_long_enough).

Calls per hour = calls / watched seconds × 3600. The run is cancelled at the end whatever happens.

    .venv/bin/python benchmarks/bench_polling.py [--duration-s 1800] [--tasks 4]
"""
import argparse
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from common import LAUNCHER, PYTHON, dev_cluster_env, ledger, only_run, run, save, show

CLIENTS = ("sacct", "squeue", "scontrol", "sacctmgr")
PIPELINE = """defaults:
  - schema
  - _self_
name: pollbench
description: "array tasks that sleep: something to watch"
vars: {{seconds: {seconds}}}
stages:
  sleep:
    kind: command
    tasks: {tasks}
    resources: {{time: "{minutes}"}}
    command: sleep ${{pipeline.vars.seconds}}
"""
SUBMITIT_WATCHER = """
import sys, submitit
folder, ids = sys.argv[1], sys.argv[2:]
jobs = [submitit.SlurmJob(folder=folder, job_id=i) for i in ids]
for j in jobs:
    j.wait()  # done() in a loop, the class-wide InfoWatcher deciding when sacct is asked
"""


def shim(root: Path, log: Path) -> Path:
    """A folder of sacct/squeue/… scripts that log '<epoch> <watcher> <client>' then exec the real one."""
    d = root / "shim"
    d.mkdir()
    for name in CLIENTS:
        real = shutil.which(name)
        script = d / name
        script.write_text(f'#!/bin/sh\necho "$(date +%s.%N) $BENCH_WATCHER {name}" >> {log}\nexec {real} "$@"\n')
        script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return d


def watcher_env(env: dict, shim_dir: Path, name: str) -> dict:
    return {**env, "PATH": f"{shim_dir}{os.pathsep}{env['PATH']}", "BENCH_WATCHER": name}


def counted(log: Path, since: float, until: float = float("inf")) -> dict:
    """{watcher: Counter(client)} of the calls logged in [since, until)."""
    out: dict = {}
    for line in log.read_text().splitlines() if log.exists() else []:
        t, who, client = line.split()
        if since <= float(t) < until:
            out.setdefault(who, Counter())[client] += 1
    return out


def wait_for_run(root: Path, timeout: float = 120) -> Path:
    t0 = time.time()
    while time.time() - t0 < timeout:
        try:
            path = only_run(root)
            if (path / "submissions.jsonl").exists() and ledger(path):
                return path
        except (ValueError, FileNotFoundError):
            pass
        time.sleep(0.5)
    raise SystemExit(f"no submitted run under {root} after {timeout:.0f} s")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration-s", type=int, default=1800, help="how long each array task sleeps")
    ap.add_argument("--tasks", type=int, default=4)
    args = ap.parse_args()
    env = dev_cluster_env()
    root = Path(tempfile.mkdtemp(prefix="bench-polling-"))
    confdir, runs, log = root / "conf", root / "runs", root / "calls.log"
    (confdir / "pipeline").mkdir(parents=True)
    minutes = f"{(args.duration_s // 60) + 10:d}"
    (confdir / "pipeline" / "pollbench.yaml").write_text(
        PIPELINE.format(seconds=args.duration_s, tasks=args.tasks, minutes=minutes))
    shim_dir = shim(root, log)
    procs, names, ended = [], ["ours:wait=true"], {}
    t_start = time.time()
    ours = subprocess.Popen([LAUNCHER, "run", "--config-dir", str(confdir), "pipeline=pollbench", "cluster=dev",
                             f"run_root={runs}", "wait=true"], env=watcher_env(env, shim_dir, "ours:wait=true"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(ours)
    run_dir = wait_for_run(runs)
    t_watch = time.time()
    jobs = [f"{rec['job_id']}_{t - rec['offset']}" for rec in ledger(run_dir) for t in rec["tasks"]]
    try:
        for i in (1, 2):
            names.append(f"ours:status--watch#{i}")
            procs.append(subprocess.Popen([LAUNCHER, "status", str(run_dir), "--watch"],
                                          env=watcher_env(env, shim_dir, f"ours:status--watch#{i}"),
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        names.append("submitit-watcher")
        procs.append(subprocess.Popen([PYTHON, "-c", SUBMITIT_WATCHER, str(root / "submitit"), *jobs],
                                      env=watcher_env(env, shim_dir, "submitit-watcher"),
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.time() + args.duration_s + 600
        while any(p.poll() is None for p in procs) and time.time() < deadline:
            for name, p in zip(names, procs):
                if p.poll() is not None and name not in ended:
                    ended[name] = (p.returncode, round(time.time() - t_watch))
            time.sleep(5)
        t_end = time.time()
        for name, p in zip(names, procs):  # those that ended during the last sleep
            if p.poll() is not None and name not in ended:
                ended[name] = (p.returncode, round(t_end - t_watch))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        run([LAUNCHER, "cancel", str(run_dir)], env, check=False)
    submission = counted(log, t_start, t_watch).get("ours:wait=true", Counter())
    watched = counted(log, t_watch)
    hours = (t_end - t_watch) / 3600
    rows, per_hour = [], {}
    for who in names:  # a watcher that never asked still gets its row (0: it read the shared answer)
        c = watched.get(who, Counter())
        queries = c["sacct"] + c["squeue"]
        per_hour[who] = round(queries / hours, 1)
        code, at = ended.get(who, ("killed", round(t_end - t_watch)))
        rows.append([who, f"exit {code} at +{at} s", c["sacct"], c["squeue"], c["scontrol"] + c["sacctmgr"],
                     per_hour[who]])
    ours_total = sum(v for k, v in per_hour.items() if k.startswith("ours"))
    rows.append(["ours, all three watchers together", "", "", "", "", round(ours_total, 1)])
    show(f"scheduler queries while {args.tasks} tasks sleep {args.duration_s} s "
         f"(watched {t_end - t_watch:.0f} s; submission itself: {dict(submission)})",
         ["watcher", "ended", "sacct", "squeue", "scontrol+sacctmgr", "sacct+squeue per hour"], rows)
    print("wrote", save("polling", {"duration_s": args.duration_s, "tasks": args.tasks,
                                    "watched_s": round(t_end - t_watch, 1), "jobs": jobs,
                                    "calls_since_submission": {k: dict(v) for k, v in watched.items()},
                                    "submission_calls": dict(submission), "per_hour": per_hour, "ended": ended}))
    shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
