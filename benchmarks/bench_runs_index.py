"""`launcher runs --campaign X --state failed --since 7d --json` over N generated run directories (issue 21
item 5: under 1 s over 10,000 runs), next to the same answer read from every run directory (what `runs`
did before the index, launcher/run/runs_db.py; the directory scan is also its fallback).

The run directories are made here from one planned smoke run (plan.json, run.json, submissions.jsonl,
completion markers): a year of nightly campaigns, 1 in 20 runs FAILED, 1 in 200 UNFINISHED, the rest
COMPLETED; created times spread over 365 days. Rows: the cold query (the index built from nothing), the
warm query (index up to date: one listing and 3 stat() per run, UNFINISHED runs re-read), each as a
fresh `launcher` process (median of --repeat), and the directory scan in one process (median of 3).

    .venv/bin/python benchmarks/bench_runs_index.py [--runs 10000] [--repeat 5]
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from common import LAUNCHER, median, run, save, show, timed

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def generate(root: Path, n: int) -> dict:
    """n run directories under root, copies of one planned smoke run with their own run.json and markers."""
    from jobs import layout
    from launcher.config.compose import compose
    from launcher.plan.model import build_plan
    from launcher.run.rundir import Run

    plan = build_plan([compose(["pipeline=smoke", "cluster=dev"])], [[]])
    plan_text = json.dumps(plan.to_json())
    markers = [(name, s.hash, t) for name, s in plan.stages.items() for t in range(s.total_tasks)]
    now, counts = time.time(), {"COMPLETED": 0, "FAILED": 0, "UNFINISHED": 0}
    for i in range(n):
        d = root / f"{i:06d}-smoke"
        d.mkdir(parents=True)
        (d / "plan.json").write_text(plan_text)
        campaign = ("nightly", "sweep-a", "sweep-b")[i % 3]
        (d / "run.json").write_text(json.dumps({"id": d.name, "created": now - 365 * 86400 * (n - i) / n,
                                                "pipeline": "smoke", "cluster": "dev", "campaign": campaign,
                                                "points": [[]]}))
        Run(d).append_ledger({"job_id": str(1000 + i), "stage": "shards", "chunk": 0, "offset": 0,
                              "tasks": [0, 1, 2, 3]})
        state = "UNFINISHED" if i % 200 == 7 else "FAILED" if i % 20 == 3 else "COMPLETED"
        counts[state] += 1
        if state == "UNFINISHED":
            continue
        for name, h, t in markers:
            failed = state == "FAILED" and name == "shards" and t == 3
            p = layout.marker_path(d, name, h, t, "failed" if failed else "done")
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(json.dumps({"job_id": f"{1000 + i}_{t}"}) if failed else "{}")
    return counts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-runs-"))
    try:
        root = tmp / "runs"
        t0 = time.perf_counter()
        counts = generate(root, args.runs)
        made_s = time.perf_counter() - t0
        env = {**os.environ, "LAUNCHER_STATE_DIR": str(tmp / "state")}
        query = [LAUNCHER, "runs", "--root", str(root), "--campaign", "nightly", "--state", "failed",
                 "--since", "7d", "--json", "-n", "0"]
        cold_s, cold = timed(lambda: run(query, env))
        warm_s = median([timed(lambda: run(query, env))[0] for _ in range(args.repeat)])
        warm = run(query, env)
        assert json.loads(warm.stdout) == json.loads(cold.stdout)

        from launcher.run import runs_db
        from launcher.run.rundir import list_runs

        def scan():
            return runs_db._filtered((runs_db.row_of(r) for r in list_runs(root)), "nightly", "FAILED",
                                     7 * 86400, None)
        scan_s = median([timed(scan)[0] for _ in range(3)])
        assert [r["run"] for r in scan()] == [r["run"] for r in json.loads(warm.stdout)]
        answer = len(json.loads(warm.stdout))
        size = (tmp / "state" / "runs.sqlite").stat().st_size
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows = [["index, cold (built from nothing), launcher process", f"{cold_s:.2f}"],
            [f"index, warm, launcher process (median of {args.repeat})", f"{warm_s:.2f}"],
            ["directory scan (every run read), in-process, median of 3", f"{scan_s:.2f}"]]
    show(f"launcher runs --campaign nightly --state failed --since 7d over {args.runs:,} runs "
         f"({counts}; {answer} row(s) answered; index {size / 1e6:.1f} MB; generated in {made_s:.0f} s)",
         ["query", "seconds"], rows)
    save("runs_index", {"runs": args.runs, "states": counts, "answer_rows": answer, "cold_s": cold_s,
                        "warm_s": warm_s, "scan_s": scan_s, "index_bytes": size, "repeat": args.repeat})


if __name__ == "__main__":
    main()
