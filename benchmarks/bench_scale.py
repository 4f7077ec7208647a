"""A 10,000-task campaign on the dev Slurm (pipeline=scale: one array chunked at MaxArraySize 1001
into 10 sbatch calls, each throttled %200, then a check stage): every task must run exactly once,
and watching it must stay cheap for the controller.

While it runs, every --every-s seconds: `launcher status <run> --json` (wall time, and the RPCs it
caused in slurmctld (`sdiag`) and slurmdbd (`sacctmgr show stats`), as deltas around the call), then
the same for submitit's own polling of the same 10,000 array tasks (`submitit.SlurmJob` objects, one
`.done()` each, the way `submitit.helpers.as_completed` polls, with its watcher forced to refresh).
Per minute: slurmctld's RPCs in all (the campaign's own load). At the end: sacct's record of every
array task (exactly one COMPLETED record each, none requeued), the completion markers, the check
stage's count.

    .venv/bin/python benchmarks/bench_scale.py [--tasks 10000] [--throttle 200] [--every-s 30]
"""
import argparse
import json
import os
import re
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

from common import LAUNCHER, dev_cluster_env, only_run, run, save, show, timed

from jobs import layout


# RPCs that answer questions (sacct, squeue, scontrol show ...), not the campaign's own job traffic
# (step create/complete, batch script complete, job accounting). Our own stats calls are left out.
def _query_ctld(name: str) -> bool:
    return "_INFO" in name and name not in ("REQUEST_HET_JOB_ALLOC_INFO", "REQUEST_STATS_INFO")


def _query_dbd(name: str) -> bool:
    return name.startswith("DBD_GET_") and name != "DBD_GET_STATS"


def rpc_counts(env) -> dict:
    """RPCs so far, by daemon: all of them, and the queries among them."""
    def by_type(text: str) -> dict:
        block = text.split("by message type", 1)[1].split("by user", 1)[0]
        return {m[0]: int(m[1]) for m in re.findall(r"^\s*(\w+)\s*\(\s*\d+\)\s*count:(\d+)", block, re.M)}

    ctld, dbd = by_type(run(["sdiag"], env).stdout), by_type(run(["sacctmgr", "show", "stats"], env).stdout)
    return {"slurmctld": sum(ctld.values()), "slurmdbd": sum(dbd.values()),
            "slurmctld_queries": sum(v for k, v in ctld.items() if _query_ctld(k)),
            "slurmdbd_queries": sum(v for k, v in dbd.items() if _query_dbd(k))}


def delta(before: dict, after: dict) -> dict:
    return {k: after[k] - before[k] for k in before}


def around(env, fn):
    """(seconds, RPC deltas, result) of fn(). The totals include the campaign's own traffic while fn
    runs; the *_queries counts are what a status call costs."""
    before = rpc_counts(env)
    t, out = timed(fn)
    return t, delta(before, rpc_counts(env)), out


def submitit_poll(jobs) -> int:
    """One polling round of submitit over every task: force its watcher to refresh, then .done() on
    each job (as submitit.helpers.as_completed does); returns how many are done."""
    jobs[0].watcher.update()
    return sum(j.done() for j in jobs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=10000)
    ap.add_argument("--throttle", type=int, default=200)
    ap.add_argument("--every-s", type=float, default=30)
    ap.add_argument("--timeout-s", type=float, default=3600)
    args = ap.parse_args()
    env = dev_cluster_env()
    os.environ["SLURM_CONF"] = env["SLURM_CONF"]  # submitit calls sacct with this process's environment
    import submitit

    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    try:
        root = work / "runs"
        root.mkdir()
        t_submit, submit_rpc, _ = around(env, lambda: run(
            [LAUNCHER, "run", "pipeline=scale", "cluster=dev", f"pipeline.vars.tasks={args.tasks}",
             f"pipeline.vars.throttle={args.throttle}", f"run_root={root}"], env))
        run_dir = only_run(root)
        ledger = [json.loads(x) for x in (run_dir / "submissions.jsonl").read_text().splitlines()]
        work_jobs = [(r["job_id"], r["offset"], len(r["tasks"])) for r in ledger if r.get("stage") == "work"]
        jobs = [submitit.SlurmJob(folder=work / "submitit", job_id=f"{jid}_{i}")
                for jid, _, n in work_jobs for i in range(n)]
        samples, minutes = [], []
        t0 = time.time()
        last_minute, minute_base = t0, rpc_counts(env)
        state = "RUNNING"
        while state not in ("COMPLETED", "FAILED") and time.time() - t0 < args.timeout_s:
            t_st, st_rpc, p = around(env, lambda: run([LAUNCHER, "status", str(run_dir), "--json"], env, check=False))
            st = json.loads(p.stdout)
            state = st["state"]
            done = sum(s["tasks"]["completed"] for s in st["stages"] if s["name"] == "work")
            t_sub, sub_rpc, sub_done = around(env, lambda: submitit_poll(jobs))
            samples.append({"t_s": round(time.time() - t0), "work_completed": done, "state": state,
                            "launcher_status": {"wall_s": round(t_st, 2), "rpc": st_rpc},
                            "submitit_poll": {"wall_s": round(t_sub, 2), "rpc": sub_rpc, "done": sub_done}})
            print(samples[-1], flush=True)
            if time.time() - last_minute >= 60:
                now = rpc_counts(env)
                minutes.append({"t_s": round(time.time() - t0),
                                **{k: round(v / ((time.time() - last_minute) / 60)) for k, v in
                                   delta(minute_base, now).items()}})
                last_minute, minute_base = time.time(), now
            time.sleep(args.every_s)
        elapsed = time.time() - t0

        # Exactly once: one sacct record per array task, COMPLETED; markers and the check agree.
        ids = ",".join(j for j, _, _ in work_jobs)
        out = run(["sacct", "-n", "-P", "-X", "-D", "-o", "JobID,State", "-j", ids], env).stdout
        records = Counter()
        states = Counter()
        for line in out.splitlines():
            jid, st = line.split("|")
            records[jid] += 1
            states[st.split()[0]] += 1
        plan = json.loads((run_dir / "plan.json").read_text())
        h = {s["name"]: s["hash"] for s in plan["stages"]}
        markers = len(list(layout.markers_dir(run_dir, "work", h["work"]).glob("*.done")))
        restarts = sum(json.loads(m.read_text())["restarts"] for m in
                       layout.markers_dir(run_dir, "work", h["work"]).glob("*.done"))
        count = (layout.output_dir(run_dir, "check", 0, 0) / "count.txt")
        result = {
            "tasks": args.tasks, "throttle_per_chunk": args.throttle, "final_state": state,
            "campaign_s": round(elapsed), "submit": {"wall_s": round(t_submit, 2), "rpc": submit_rpc,
                                                     "sbatch_calls": len(ledger)},
            "sacct_records": len(records), "tasks_with_more_than_one_record": sum(n > 1 for n in records.values()),
            "sacct_states": dict(states), "done_markers": markers, "restarts_in_markers": restarts,
            "check_stage": count.read_text().strip() if count.exists() else None,
            "samples": samples, "rpc_per_minute": minutes}
        path = save("scale", result)
        mean = lambda xs: round(sum(xs) / max(1, len(xs)), 2)  # noqa: E731
        show(f"{args.tasks}-task campaign: {result['submit']['sbatch_calls']} sbatch calls, finished {state} in "
             f"{result['campaign_s']} s; {len(records)} sacct records, {markers} markers, check: "
             f"{result['check_stage']}",
             ["per watch call (mean of %d)" % len(samples), "wall s", "slurmctld queries", "slurmdbd queries",
              "all slurmctld RPCs meanwhile"],
             [(name, mean([s[key]["wall_s"] for s in samples]),
               mean([s[key]["rpc"]["slurmctld_queries"] for s in samples]),
               mean([s[key]["rpc"]["slurmdbd_queries"] for s in samples]),
               mean([s[key]["rpc"]["slurmctld"] for s in samples]))
              for name, key in (("launcher status --json", "launcher_status"),
                                ("submitit: .done() on every task", "submitit_poll"))])
        print(f"slurmctld RPCs per minute during the campaign: {[m['slurmctld'] for m in minutes]}")
        print(f"results: {path}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
