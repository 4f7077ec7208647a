"""Documents per second of the data recipe's filtering stage (`clean` of pipeline=data,
data=fineweb_like: reader → URL, language, Gopher repetition, Gopher quality, C4, FineWeb filters →
writer, removed documents kept) run two ways on the same demo corpus, one after the other:

  launcher:  `launcher run pipeline=data cluster=dev` (the other stages deleted), 4 array tasks on the
             dev Slurm; wall time from the command's start until the 4th completion marker appears.
  direct:    datatrove's LocalPipelineExecutor, tasks=4, workers=4, running the very blocks of the
             launcher's spec.json (built the same way), in the same stage environment; wall time of
             the whole process (imports included, as the tasks pay them too).

Per task, the launcher's own overhead is the task runner's time (its marker) minus the time
datatrove's blocks report for that rank (its stats file).

    .venv/bin/python benchmarks/bench_data.py [--docs 1200 4800 19200]
"""
import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from common import LAUNCHER, ROOT, dev_cluster_env, only_run, run, save, show

from jobs import layout
from jobs.demo.corpus import make_corpus

CPU_PYTHON = str(ROOT / ".envs" / "cpu" / "bin" / "python")
TASKS = 4
ONLY_CLEAN = [f"~pipeline.stages.{s}" for s in ("dedup", "tokenizer", "tokenize", "merge")]

DIRECT = """
import json, sys
from datatrove.executor import LocalPipelineExecutor
from jobs.layout import Folders
from jobs.adapters.datatrove import instantiate, keep_removed

if __name__ == "__main__":
    spec = json.load(open(sys.argv[1]))
    spec["run_dir"] = sys.argv[2]
    folders = Folders(spec, 0)
    blocks = instantiate(folders.fill(spec["payloads"][0]["blocks"]))
    keep_removed(blocks, folders.of(spec["stage"], "removed"))
    LocalPipelineExecutor(blocks, tasks=int(sys.argv[3]), workers=int(sys.argv[3]),
                          logging_dir=str(folders.of(spec["stage"], "logs"))).run()
"""


def launcher_run(corpus: Path, work: Path, env: dict) -> dict:
    root = work / "runs"
    root.mkdir()
    t0 = time.perf_counter()
    run([LAUNCHER, "run", "pipeline=data", "data=fineweb_like", "cluster=dev", f"data.source={corpus}",
         f"data.tasks={TASKS}", f"run_root={root}", *ONLY_CLEAN], env)
    submitted = time.perf_counter() - t0
    run_dir = only_run(root)
    h = json.loads((run_dir / "plan.json").read_text())["stages"][0]["hash"]
    markers = layout.markers_dir(run_dir, "clean", h)
    while len(list(markers.glob("*.done"))) < TASKS:
        if list(markers.glob("*.failed")):
            raise SystemExit(f"a task failed: see {run_dir}")
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    overhead = []
    for t in range(TASKS):
        marker = json.loads(layout.marker_path(run_dir, "clean", h, t).read_text())
        stats = json.loads((layout.datatrove_dir(run_dir, "clean", h, 0, "logs") / "stats" / f"{t:05d}.json").read_text())
        overhead.append(marker["seconds"] - sum(b["time_stats"]["total"] for b in stats))
    return {"wall_s": round(wall, 2), "submit_s": round(submitted, 2), "run_dir": str(run_dir),
            "runner_overhead_per_task_s": round(sum(overhead) / len(overhead), 2)}


def direct_run(run_dir: Path, work: Path) -> dict:
    spec = run_dir / "stages" / "clean" / "spec.json"
    script = work / "direct.py"
    script.write_text(DIRECT)
    out = work / "direct"
    t0 = time.perf_counter()
    run([CPU_PYTHON, str(script), str(spec), str(out), str(TASKS)],
        {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"})
    return {"wall_s": round(time.perf_counter() - t0, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, nargs="+", default=[1200, 4800, 19200])
    args = ap.parse_args()
    env = dev_cluster_env()
    rows, results = [], []
    for docs in args.docs:
        work = Path(tempfile.mkdtemp(prefix=f"bench-data-{docs}-"))
        try:
            corpus = work / "corpus"
            info = make_corpus(corpus, docs=docs, shards=TASKS, seed=0)
            lr = launcher_run(corpus, work, env)
            dr = direct_run(Path(lr["run_dir"]), work)
            ratio = dr["wall_s"] / lr["wall_s"]
            res = {"docs": docs, "corpus_mb_gz": round(info["bytes"] / 1e6, 2), "launcher": lr, "direct": dr,
                   "launcher_docs_per_s": round(docs / lr["wall_s"], 1),
                   "direct_docs_per_s": round(docs / dr["wall_s"], 1), "launcher_over_direct": round(ratio, 3)}
            results.append(res)
            rows.append((docs, res["corpus_mb_gz"], lr["wall_s"], dr["wall_s"], res["launcher_docs_per_s"],
                         res["direct_docs_per_s"], f"{ratio:.2f}", lr["submit_s"], lr["runner_overhead_per_task_s"]))
        finally:
            shutil.rmtree(work, ignore_errors=True)
    show(f"clean stage of data=fineweb_like, {TASKS} ranks: launcher on the dev Slurm vs LocalPipelineExecutor",
         ["docs", "MB (gz)", "launcher s", "direct s", "launcher docs/s", "direct docs/s", "launcher/direct",
          "submit s", "runner overhead/task s"], rows)
    path = save("data", {"tasks": TASKS, "results": results})
    print(f"results: {path}")


if __name__ == "__main__":
    main()
