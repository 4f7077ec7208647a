"""Documents per second of kind=cluster (TF-IDF + TruncatedSVD embeddings, faiss spherical k-means,
SemDeDup within clusters) run two ways on the same demo corpus, one after the other, in the same stage
environment (.envs/cpu):

  launcher:  `launcher run --config-dir … pipeline=clubench cluster=local wait=true` with the stage's
             tasks at 1 and at --shards (the plan's topics_fit -> topics_assign (tasks) -> topics: the
             local backend, the task runner, the shard files, the outputs, removed documents, topics.json
             and the map). documents/s from its result.json: documents over the work's critical path
             (fit embedder + k-means + the slowest assign shard + SemDeDup; reading, writing, queueing
             and the tasks' starts apart).
  direct:    a plain script making the same library calls with the same arguments on the same texts
             (TfidfVectorizer.fit_transform and TruncatedSVD.fit on all of them, the sample being all;
             transform; faiss.Kmeans(spherical, niter 25, nredo 4, seed 0); the same transforms again and
             faiss.IndexFlatIP search, as the assign part does; the same greedy numpy SemDeDup per
             cluster); documents over the same span.

The wall time of each whole command is shown too (the launcher's includes planning, the corpus read,
five tasks' starts at 3 shards, the outputs and the report).

Alternating, --reps each (median): other work shares the 2 cores.

    .venv/bin/python benchmarks/bench_cluster.py [--docs 1200 4800] [--shards 3] [--reps 3]
"""
import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from common import LAUNCHER, ROOT, median, only_run, run, save, show

from jobs.demo.corpus import make_corpus

CPU_PYTHON = str(ROOT / ".envs" / "cpu" / "bin" / "python")
K, DIMS, THRESHOLD = 8, 128, 0.95

DIRECT = """
import glob, gzip, json, sys, time
import numpy as np
import faiss
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer

texts = [json.loads(x)["text"] for f in sorted(glob.glob(sys.argv[1] + "/*.jsonl.gz")) for x in gzip.open(f, "rt")]
k, dims, threshold = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
t0 = time.perf_counter()
unit = lambda a: np.ascontiguousarray(a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12))
vec = TfidfVectorizer(max_features=50000, sublinear_tf=True, stop_words="english",
                      token_pattern=r"(?u)\\b[^\\W\\d_]{2,}\\b", dtype=np.float32)
x = vec.fit_transform(texts)
svd = TruncatedSVD(n_components=dims, random_state=0).fit(x)
sample = unit(svd.transform(x).astype("float32"))
km = faiss.Kmeans(sample.shape[1], k, niter=25, nredo=4, seed=0, spherical=True, verbose=False,
                  max_points_per_centroid=len(sample))
km.train(sample)
e = unit(svd.transform(vec.transform(texts)).astype("float32"))
index = faiss.IndexFlatIP(e.shape[1])
index.add(km.centroids)
labels = index.search(e, 1)[1][:, 0]
removed = 0
for c in range(k):
    members = np.flatnonzero(labels == c)
    s = e[members] @ e[members].T
    kept = []
    for i in range(len(members)):
        if kept and s[i, kept].max() > threshold:
            removed += 1
        else:
            kept.append(i)
t1 = time.perf_counter()
print("BENCH " + json.dumps({"documents": len(texts), "removed": removed, "seconds": t1 - t0}))
"""

PIPELINE = """defaults: [schema, _self_]
name: clubench
stages:
  topics:
    kind: cluster
    tasks: {tasks}
    resources: {{time: "01:00:00", mem_gb: 8}}
    cluster: {{input: {corpus}, k: {k}, dims: {dims}, semdedup: {{threshold: {threshold}}}}}
"""


def launcher_run(conf: Path, root: Path, tasks: int, env) -> dict:
    root.mkdir()
    t0 = time.perf_counter()
    run([LAUNCHER, "run", "--config-dir", str(conf), "pipeline=clubench", "cluster=local", "wait=true",
         f"run_root={root}", f"pipeline.stages.topics.tasks={tasks}"], env)
    wall = time.perf_counter() - t0
    result = json.loads(next((only_run(root) / "stages" / "topics" / "out").glob("0/0/result.json")).read_text())
    return {**result, "wall_s": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, nargs="+", default=[1200, 4800])
    ap.add_argument("--shards", type=int, default=3, help="the assign part's tasks in the sharded launcher run")
    ap.add_argument("--reps", type=int, default=3, help="alternating launcher/direct runs per size; medians")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    rows, out = [], []
    for docs in args.docs:
        corpus = work / f"corpus-{docs}"
        make_corpus(corpus, docs=docs, shards=4, seed=0)
        conf = work / f"conf-{docs}"
        (conf / "pipeline").mkdir(parents=True)
        (conf / "pipeline" / "clubench.yaml").write_text(PIPELINE.format(corpus=corpus, k=K, dims=DIMS,
                                                                         threshold=THRESHOLD, tasks=1))
        one, many, ds = [], [], []
        for rep in range(args.reps):
            one.append(launcher_run(conf, work / f"runs-{docs}-{rep}-1", 1, env))
            many.append(launcher_run(conf, work / f"runs-{docs}-{rep}-{args.shards}", args.shards, env))
            t0 = time.perf_counter()
            p = run([CPU_PYTHON, "-c", DIRECT, str(corpus), str(K), str(DIMS), str(THRESHOLD)], env)
            wall = time.perf_counter() - t0
            direct = json.loads(next(x for x in p.stdout.splitlines() if x.startswith("BENCH "))[6:])
            ds.append({**direct, "documents_per_s": direct["documents"] / direct["seconds"], "wall_s": wall})
        dps_d = median([r["documents_per_s"] for r in ds])
        for tasks, ls in ((1, one), (args.shards, many)):
            dps_l = median([r["documents_per_s"] for r in ls])
            rows.append([docs, tasks, dps_l, round(dps_d, 1), round(dps_l / dps_d, 2), ls[0]["removed"],
                         ds[0]["removed"], round(median([r["wall_s"] for r in ls]), 1),
                         round(median([r["wall_s"] for r in ds]), 1)])
        out.append({"docs": docs, "launcher_1": one, f"launcher_{args.shards}": many, "direct": ds})
    show("kind=cluster documents/s (fit + faiss k-means + assign + SemDeDup), launcher vs the same calls direct",
         ["docs", "tasks", "launcher docs/s", "direct docs/s", "ratio", "removed (l)", "removed (d)", "wall l (s)",
          "wall d (s)"], rows)
    print(save("cluster", {"k": K, "dims": DIMS, "threshold": THRESHOLD, "shards": args.shards, "runs": out}))


if __name__ == "__main__":
    main()
