"""Runs many bad-config cases in ONE process: `launcher.cli.main(["run", ...])` per case, in-process,
each with its own run root, working directory and environment (restored after it). Python, Hydra and
the launcher are imported once instead of once per case, which is most of a failing `launcher run`'s
time (tests/integration/test_bad_configs.py; BAD_CONFIGS_ISOLATED=1 runs one process per case).

stdin: JSON list of {"id", "argv", "env", "run_root"}. stdout: one JSON line per case, in order:
{"id", "rc", "stdout", "stderr", "seconds", "queued"}; an exception that escapes main() is printed into
the case's stderr as the traceback `python -m launcher` would have printed."""
from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # conftest: queued()


def run_case(case: dict, main) -> dict:
    from conftest import queued

    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    out, err = io.StringIO(), io.StringIO()
    t0 = time.perf_counter()
    try:
        os.environ.update(case["env"])
        os.chdir(case["run_root"])
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main(case["argv"])
            except SystemExit as e:  # argparse
                rc = e.code if isinstance(e.code, int) else 1
            except BaseException:  # noqa: BLE001 - what the interpreter would print, then exit 1
                traceback.print_exc()
                rc = 1
        jobs = sorted(queued(case["env"], root=case["run_root"]))
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    return {"id": case["id"], "rc": rc, "stdout": out.getvalue(), "stderr": err.getvalue(),
            "seconds": round(time.perf_counter() - t0, 3), "queued": jobs}


def share_interpreter_answers() -> None:
    """Preflight asks each stage environment's interpreter to import its modules and resolve the
    stage's targets (launcher/config/environments.py interpreter_problems): 10-30 s for the TRL/lighteval or
    vLLM environments. The environments do not change while the corpus runs, so the same question
    gets the same answer: asked once per process, not once per case. BAD_CONFIGS_ISOLATED=1 asks
    every time."""
    import functools

    from launcher.config import environments
    from launcher.plan import preflight

    @functools.lru_cache(maxsize=None)
    def cached(python, modules, targets, pythonpath):
        return environments.interpreter_problems(python, modules, targets, pythonpath)

    preflight.interpreter_problems = lambda python, modules=(), targets=(), pythonpath=(): dict(
        cached(python, tuple(modules), tuple(targets), tuple(pythonpath)))


def main() -> int:
    cases = json.load(sys.stdin)
    from launcher.cli import main as launcher_main

    share_interpreter_answers()

    for case in cases:
        print(json.dumps(run_case(case, launcher_main)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
