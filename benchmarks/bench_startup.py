"""Cold start of `launcher --help` and `launcher plan` next to the interpreter's own start.

    .venv/bin/python benchmarks/bench_startup.py [--repeat 10]
"""
import argparse
import subprocess
import sys
import tempfile

from common import median, save, timed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cases = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "launcher --help": [sys.executable, "-m", "launcher", "--help"],
            "launcher plan (smoke, local)": [sys.executable, "-m", "launcher", "plan", "pipeline=smoke",
                                             "cluster=local", f"run_root={tmp}"],
        }
        res = {name: round(median([timed(lambda: subprocess.run(argv, cwd=tmp, capture_output=True, check=True))[0]
                                   for _ in range(args.repeat)]), 3) for name, argv in cases.items()}
        imports = subprocess.run([sys.executable, "-X", "importtime", *cases["launcher plan (smoke, local)"][1:]],
                                 cwd=tmp, capture_output=True, text=True).stderr
    top = sorted(((int(line.split("|")[1]), line.split("|")[2].strip()) for line in imports.splitlines()
                  if line.startswith("import time:") and line.split("|")[1].strip().isdigit()), reverse=True)
    base = res["python -c pass"]
    save("startup", {"median_s": res, "over_interpreter_s": {k: round(v - base, 3) for k, v in res.items()},
                     "top_cumulative_imports_ms_for_plan": [(name, round(us / 1000, 1)) for us, name in top[:10]]})


if __name__ == "__main__":
    main()
