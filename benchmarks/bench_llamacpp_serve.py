"""Generated tokens/s of llama.cpp's server (CPU build, the tiny GGUF of the tests) two ways, on the same
GGUF and prompts, one after the other:

  launcher:  `launcher run pipeline=serve cluster=local` with serve.engine=llama.cpp and no client stage
             (serve_s long): the local backend, jobs.task, the serve runner and its adapter start the
             server; the client below sends its requests to the endpoint the server published;
  by hand:   `python -m llama_cpp.server` started directly with the same command line (the same
             argv builder, jobs/adapters/llamacpp.py: n_ctx, threads), same client.

Greedy, one request at a time, after one warm-up request each. Goal: launcher / by hand >= 0.95 (issue 23).

    .venv/bin/python benchmarks/bench_llamacpp_serve.py [--requests 96] [--max-tokens 128] [--threads 1]
"""
import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from common import LAUNCHER, ROOT, only_run, run, save, show
from llamacpp_common import gguf, measure, start_by_hand, stop

from jobs import layout


def through_launcher(model: Path, work: Path, a) -> dict:
    root = work / "runs"
    root.mkdir()
    env = {**os.environ, "LAUNCHER_RUN_ROOT": str(root), "PYTHONPATH": str(ROOT)}
    run([LAUNCHER, "run", "pipeline=serve", "cluster=local", f"pipeline.vars.model={model}", "pipeline.vars.serve_s=3600",
         "~pipeline.stages.smoke", "~pipeline.stages.report", "pipeline.stages.serve.serve.engine=llama.cpp",
         f"pipeline.stages.serve.resources.cpus_per_task={a.threads}", "pipeline.stages.serve.serve.max_model_len=512",
         f"run_root={root}"], env, cwd=work)
    rundir = only_run(root)
    ep = layout.endpoint_file(rundir, "serve", 0)
    deadline = time.time() + 300
    while (layout.read_json(ep, {}) or {}).get("state") != "ready":
        if time.time() > deadline:
            raise SystemExit(f"no ready endpoint in {ep} after 300 s")
        time.sleep(0.5)
    info = json.loads(ep.read_text())
    try:
        return measure(info["url"].replace(info["host"], "127.0.0.1"), info["model"], a.requests, a.max_tokens)
    finally:
        run([LAUNCHER, "cancel", str(rundir)], env, cwd=work, check=False)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=96)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-llserve-") as w:
        work = Path(w)
        model = gguf(work)
        rows = {"launcher": through_launcher(model, work, a)}
        proc, base = start_by_hand(model, 31873, a.threads)
        try:
            rows["by hand"] = measure(base, "bench", a.requests, a.max_tokens)
        finally:
            stop(proc)
    ratio = round(rows["launcher"]["tokens_per_s"] / rows["by hand"]["tokens_per_s"], 3)
    show(f"llama.cpp server, tiny GGUF, {a.threads} thread(s): through the launcher vs by hand",
         ["server", "requests", "tokens", "seconds", "tokens/s"],
         [[k, v["requests"], v["tokens"], v["seconds"], v["tokens_per_s"]] for k, v in rows.items()])
    print(f"launcher / by hand = {ratio} (goal >= 0.95)")
    save("llamacpp_serve", {"args": vars(a), "runs": rows, "launcher_over_by_hand": ratio})


if __name__ == "__main__":
    main()
