"""Cold start: `launcher --help` and `launcher plan pipeline=smoke cluster=local` next to
`python -c pass` with the same interpreter (fresh process each time, median of --repeat), and the
10 biggest cumulative imports of `launcher plan` (python -X importtime).

Wrapper packages are folded into the one child that makes their cost (hydra.core.override_parser
-> hydra), so the list names 10 different costs.

This machine sets PYTHONDONTWRITEBYTECODE=1, so the project's own modules (the repo has no
__pycache__) are compiled on every start; the "bytecode cached" rows write .pyc files to a temporary
PYTHONPYCACHEPREFIX instead (nothing is written into the repo), as a normal login shell would.

    .venv/bin/python benchmarks/bench_startup.py [--repeat 10]
"""
import argparse
import os
import tempfile

from common import LAUNCHER, PYTHON, median, run, save, show, timed


def top_imports(argv, env, n=10) -> list:
    """The n biggest cumulative imports. A line's children are printed before it, one level deeper;
    a package whose cost is almost all one child (hydra.core -> hydra) is folded into that child."""
    err = run([PYTHON, "-X", "importtime", *argv], env).stderr
    rows, pending = [], []  # pending: (level, cumulative) of lines whose parent is not printed yet
    for line in err.splitlines():  # "import time: self [us] | cumulative | <indent>package"
        if not line.startswith("import time:") or not line.split("|")[1].strip().isdigit():
            continue
        self_us, cum, name = line.removeprefix("import time:").split("|")
        level, cum = (len(name) - len(name.lstrip()) - 1) // 2, int(cum)
        children = [c for lvl, c in pending if lvl > level]
        pending = [(lvl, c) for lvl, c in pending if lvl <= level] + [(level, cum)]
        if max(children, default=0) < 0.95 * cum:
            rows.append({"module": name.strip(), "cumulative_ms": round(cum / 1000, 1),
                         "self_ms": round(int(self_us) / 1000, 1)})
    return sorted(rows, key=lambda r: -r["cumulative_ms"])[:n]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cases = {"python -c pass": [PYTHON, "-c", "pass"], "launcher --help": [LAUNCHER, "--help"],
                 "launcher plan pipeline=smoke cluster=local": [LAUNCHER, "plan", "pipeline=smoke", "cluster=local",
                                                                f"run_root={tmp}/runs"]}
        envs = {"as this machine runs it": dict(os.environ),
                "bytecode cached": {**os.environ, "PYTHONDONTWRITEBYTECODE": "", "PYTHONPYCACHEPREFIX": f"{tmp}/pyc"}}
        res = {}
        for env_name, env in envs.items():
            for argv in cases.values():
                run(argv, env, cwd=tmp)  # warm-up: page cache, and the .pyc files of the cached variant
            res[env_name] = {name: median([timed(lambda: run(argv, env, cwd=tmp))[0] for _ in range(args.repeat)])
                             for name, argv in cases.items()}
        imports = top_imports(cases["launcher plan pipeline=smoke cluster=local"], envs["bytecode cached"])
    rows = []
    for env_name, r in res.items():
        base = r["python -c pass"]
        rows += [[name, env_name, f"{s:.3f}", f"{s - base:+.3f}"] for name, s in r.items()]
    show(f"startup, median of {args.repeat} (s)", ["command", "environment", "wall", "over python -c pass"], rows)
    show("launcher plan: 10 biggest cumulative imports (python -X importtime, bytecode cached)",
         ["module", "cumulative ms", "self ms"], [[i["module"], i["cumulative_ms"], i["self_ms"]] for i in imports])
    over = {env_name: {k: round(v - r["python -c pass"], 3) for k, v in r.items()} for env_name, r in res.items()}
    print("wrote", save("startup", {"repeat": args.repeat, "median_s": res, "over_interpreter_s": over,
                                    "top_cumulative_imports_plan": imports}))


if __name__ == "__main__":
    main()
