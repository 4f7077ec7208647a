"""The second identical `launcher run` (issue 20 item 3: under 1 s): `launcher run pipeline=smoke
cluster=local` into a fresh run root, waited for, then the same command again (every point taken from
the first run's output: 0 jobs), as a fresh `launcher` process (median of --repeat), next to the first
run's wall time and `python -c pass`. Then the same with --runs earlier run directories under the run
root (copies of the first run whose content keys match nothing: every one is read by the lookup).

No cluster needed (cluster=local). Results: benchmarks/results/cache.json.

    .venv/bin/python benchmarks/bench_cache.py [--runs 1000] [--repeat 5]
"""
import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from common import LAUNCHER, PYTHON, ROOT, median, run, save, show, timed

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

COMMAND = ["run", "pipeline=smoke", "cluster=local"]


def launch(root: Path, env: dict) -> tuple:
    """(wall s, CPU s: user + system of the launcher process) of one `launcher run`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    seconds, _ = timed(lambda: run([LAUNCHER, *COMMAND, f"run_root={root}"], env, cwd=root))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return seconds, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def wait_completed(root: Path, env: dict, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        st = json.loads(run([LAUNCHER, "status", "latest", "--json"], env, cwd=root, check=False).stdout or "{}")
        if st.get("state") in ("COMPLETED", "FAILED"):
            assert st["state"] == "COMPLETED", st
            return
        time.sleep(1)
    raise SystemExit(f"the first run did not end in {timeout} s")


def earlier_runs(root: Path, source: Path, n: int) -> None:
    """n copies of `source` (plan.json with every key changed, run.json, markers): read, never matched."""
    plan = json.loads((source / "plan.json").read_text())
    for s in plan["stages"]:
        s["keys"] = ["0" * 63 + "x" for _ in s["keys"]]
        s["cached"] = {}
    text, meta = json.dumps(plan), json.loads((source / "run.json").read_text())
    markers = [p.relative_to(source) for p in source.glob("stages/*/markers/*/*.done")]
    for i in range(n):
        d = root / f"20200101-{i:06d}-smoke"
        d.mkdir()
        (d / "plan.json").write_text(text)
        (d / "run.json").write_text(json.dumps(dict(meta, id=d.name)))
        for marker in markers:
            (d / marker).parent.mkdir(parents=True, exist_ok=True)
            (d / marker).write_text("{}")


def second_runs(root: Path, env: dict, repeat: int) -> tuple:
    """([wall s], [CPU s]) of `repeat` identical runs."""
    got = [launch(root, env) for _ in range(repeat)]
    return [round(w, 3) for w, _ in got], [round(c, 3) for _, c in got]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    env = {**os.environ, "LAUNCHER_STATE_DIR": tempfile.mkdtemp(prefix="bench-cache-state-"),
           "LAUNCHER_RUN_ROOT": str(root),
           # this checkout's launcher, whichever tree the .venv's editable install points at
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    try:
        baseline = median([timed(lambda: run([PYTHON, "-c", "pass"], env))[0] for _ in range(3)])
        first, first_cpu = launch(root, env)
        wait_completed(root, env)
        (source,) = [p for p in root.iterdir() if (p / "run.json").exists()]
        second, second_cpu = second_runs(root, env, args.repeat)
        newest = max((p for p in root.iterdir() if (p / "run.json").exists()), key=lambda p: p.stat().st_mtime)
        assert not (newest / "submissions.jsonl").exists(), "the second run submitted jobs"
        earlier_runs(root, source, args.runs)
        crowded, crowded_cpu = second_runs(root, env, args.repeat)
        rows = [["python -c pass", baseline, "-"], ["first run (submits 4 jobs)", round(first, 3), round(first_cpu, 3)],
                ["second run, all cached (median)", median(second), median(second_cpu)],
                [f"second run with {args.runs} earlier runs under the root (median)", median(crowded),
                 median(crowded_cpu)]]
        show(f"launcher run pipeline=smoke cluster=local, fresh process (load {os.getloadavg()[0]:.1f})",
             ["what", "wall s", "CPU s"], rows)
        path = save("cache", {"runs": args.runs, "repeat": args.repeat, "python_pass_s": baseline,
                              "first_run_s": round(first, 3), "first_run_cpu_s": round(first_cpu, 3),
                              "second_run_s": second, "second_run_cpu_s": second_cpu,
                              "second_run_median_s": median(second), "second_run_median_cpu_s": median(second_cpu),
                              "second_run_with_earlier_runs_s": crowded, "second_run_with_earlier_runs_cpu_s": crowded_cpu,
                              "second_run_with_earlier_runs_median_s": median(crowded),
                              "second_run_with_earlier_runs_median_cpu_s": median(crowded_cpu)})
        print(f"saved {path}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(env["LAUNCHER_STATE_DIR"], ignore_errors=True)


if __name__ == "__main__":
    main()
