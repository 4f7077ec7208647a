"""kind=cluster on the compute node: topic clustering and semantic deduplication (SemDeDup) of the
documents of a datatrove-readable input, sharded the usual way. The plan expands one config stage
<name> into three (launcher/kinds/cluster.py expand); cluster.step (set by the plan) says which part a
task runs:

1. fit, <name>_fit, 1 task: reads a seeded sample of cluster.input (cluster.sample documents, all when
   null; .jsonl/.jsonl.gz under a folder, sorted by path, jobs/runtime/prompt_records.py), fits the
   embedder on it (TF-IDF vocabulary, and TruncatedSVD for embedding=tfidf; a {model: <folder>} has
   nothing to fit, TF-IDF still names the clusters) and trains faiss.Kmeans (seeded, spherical, on the
   L2-normalised sample embeddings). k larger than the number of documents fails here, naming the
   config stage and cluster.k. Writes, in its datatrove output folder:
     centroids.npy (k x d float32), embedder.pkl (the fitted scikit-learn objects), fit.json (facts)
2. assign, <name>_assign, `tasks` array tasks: task i of N reads the documents at global positions
   p % N == i (generate's sharding: a shard never depends on the file layout), embeds them with the
   fitted embedder, assigns each to its nearest centroid (faiss.IndexFlatIP, cosine) and writes
     <index>.jsonl.gz    the shard's documents as read, metadata.cluster added (launcher inspect)
     <index>.npz         position, id, cluster, centroid similarity, embedding (float32 n x d)
     <index>.terms.npz   per cluster, the sum of the shard's TF-IDF rows (sparse k x V: labels)
     logs/stats/<index>.json   reader / writer counts (launcher summary)
3. dedup + report, <name>, 1 task: gathers every shard, back in input order, and runs SemDeDup within
   each cluster (jobs/runtime/semdedup.py) — a cluster's documents come from every shard, so one task
   sees them all; at the sizes a CPU stage handles the greedy rule is seconds (docs/cluster.md), and k
   tasks over clusters would each read every shard. Writes, datatrove layout (the stage's output:
   {input:<name>} for the next stage):
     <datatrove output>/00000.jsonl.gz        the kept documents, as read, metadata.cluster added
     <datatrove removed>/0-SemDeDup/00000.jsonl.gz   the removed ones, metadata.cluster, semdedup_of
                                              (the kept id) and semdedup_similarity (`launcher inspect`)
     <datatrove logs>/stats/00000.json        reader / SemDeDup / writer counts (`launcher summary`)
   and in the task's output folder: topics.json (per cluster: size, label terms, removed, example
   snippets), clusters.jsonl.gz (id -> cluster, every document), topic_map.png (2-D PCA of the
   embeddings, one colour per cluster) and result.json (documents/s, cluster sizes, removed count).

Every row of an embedding depends on its own text only, so tasks: 1 and tasks: N give the same labels
and the same kept documents for a seed. Rerunning a task rewrites its files (temporary name, rename)."""
from __future__ import annotations

import gzip
import json
import os
import pickle
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

from jobs import layout
from jobs.runtime import png, prompt_records, semdedup

reruns_when_complete = False
resolves_hub_references = True

REMOVED_BLOCK = "0-SemDeDup"
SNIPPET = 240  # characters of an example document in topics.json


class ClusterConfigError(ValueError):
    """Bad stage config found on the node (the data was not visible at submission): names stage and key."""


def bad(stage: str, key: str, message: str) -> ClusterConfigError:
    return ClusterConfigError(f"stage '{stage}': pipeline.stages.{stage}.cluster.{key}: {message}")


def documents(source: str, text_key: str, id_key: str):
    """(global position, record as read, text, id) of every document under `source`, in file order."""
    for pos, (f, line_no, fallback, rec) in enumerate(prompt_records.raw_records(source)):
        if not isinstance(rec.get(text_key), str):
            raise ValueError(f"{f} line {line_no + 1} has no string field {text_key!r}")
        rid = rec.get(id_key)
        yield pos, rec, rec[text_key], (str(rid) if rid not in (None, "") else fallback)


def write_jsonl_gz(path: Path, records) -> int:
    """Atomically (temporary name, then rename); returns the lines written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    n = 0
    with gzip.GzipFile(tmp, "wb", mtime=0) as f:
        for r in records:
            f.write((json.dumps(r, ensure_ascii=False) + "\n").encode())
            n += 1
    os.replace(tmp, path)
    return n


def atomic_bytes(path: Path, write) -> None:
    """write(file object) into path through a temporary name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        write(f)
    os.replace(tmp, path)


def with_meta(rec: Dict[str, Any], **meta) -> Dict[str, Any]:
    m = rec.get("metadata") if isinstance(rec.get("metadata"), dict) else {}
    return {**rec, "metadata": {**m, **meta}}


def stats_blocks(n: int, kept: int, removed: int) -> List[Dict[str, Any]]:
    """datatrove's stats file shape (launcher/reports/data_report.py block_rows reads it)."""
    return [{"name": "📖 - READER: cluster input", "stats": {"documents": n}},
            {"name": "🔻 - FILTER: SemDeDup", "stats": {"total": n, "forwarded": kept, "dropped": removed,
                                                       **({"dropped_semdedup": removed} if removed else {})}},
            {"name": "💽 - WRITER: jsonl", "stats": {"total": kept}}]


def prepared(task) -> Tuple[Dict[str, Any], Dict[str, Any], layout.Folders]:
    """(cluster section with its folders filled, cluster.step, the folders of this point)."""
    task.export_environment()
    c = dict(task.payload["cluster"])
    folders = layout.Folders(task.spec, task.point)
    c["input"] = folders.fill(c["input"])
    if isinstance(c["embedding"], dict):
        c["embedding"] = dict(c["embedding"], model=folders.fill(c["embedding"]["model"]))
    step = c.get("step") or {"part": "dedup", "stage": task.stage}
    return c, step, folders


def run(task) -> Dict[str, Any]:
    c, step, folders = prepared(task)
    part = {"fit": fit, "assign": assign_shard, "dedup": dedup}.get(step["part"])
    if part is None:
        raise ValueError(f"stage '{task.stage}': cluster.step.part {step['part']!r} is not fit, assign or dedup "
                         f"(the plan sets it)")
    return part(task, c, step, folders)


# -- 1. fit -------------------------------------------------------------------------------------------

def sample_texts(c: Dict[str, Any], stage: str) -> Tuple[List[str], int]:
    """(texts of the seeded sample in input order, documents in the input). Two passes over the input:
    count, then keep the drawn positions, so memory holds the sample only."""
    import numpy as np

    try:
        n = sum(1 for _ in prompt_records.raw_records(c["input"]))
        if c["k"] > n:
            raise bad(stage, "k", f"k={c['k']} clusters but {c['input']} holds {n} document(s): use k <= {n}")
        take = None
        if c["sample"] and c["sample"] < n:
            take = set(np.random.default_rng(c["seed"]).choice(n, size=c["sample"], replace=False).tolist())
        texts = [t for pos, _, t, _ in documents(c["input"], c["text_key"], c["id_key"]) if take is None or pos in take]
    except (OSError, ValueError) as e:
        if isinstance(e, ClusterConfigError):
            raise
        raise bad(stage, "input", str(e)) from None
    return texts, n


def fit(task, c, step, folders) -> Dict[str, Any]:
    from jobs.adapters import embeddings

    texts, n = sample_texts(c, step["stage"])
    embeddings.load_libraries(model=isinstance(c["embedding"], dict))
    t0 = time.time()
    embedder = embeddings.fit_embedder(texts, c["embedding"], c["max_features"], c["dims"], c["seed"])
    emb, _ = embeddings.embed_with(embedder, texts)
    t1 = time.time()
    centroids, facts = embeddings.kmeans(emb, c["k"], c["seed"])
    t2 = time.time()
    out = folders.of(task.stage, "output")
    atomic_bytes(out / "embedder.pkl", lambda f: pickle.dump(embedder, f))
    atomic_bytes(out / "centroids.npy", lambda f: __import__("numpy").save(f, centroids))
    result = {"documents": n, "sample": len(texts), "k": c["k"], "dims": int(emb.shape[1]), "kmeans": facts,
              "seconds": {"fit_embedder": round(t1 - t0, 3), "kmeans": round(t2 - t1, 3)}, "output": str(out)}
    layout.atomic_write_json(out / "fit.json", result)
    layout.atomic_write_json(folders.of(task.stage, "logs") / "stats" / "00000.json",
                             [{"name": "📖 - READER: cluster sample", "stats": {"documents": len(texts)}}])
    return result


# -- 2. assign ----------------------------------------------------------------------------------------

def shard_documents(c, stage: str, index: int, tasks: int):
    """(positions, records, texts, ids) of the documents at global positions p % tasks == index."""
    pos, recs, texts, ids = [], [], [], []
    try:
        for p, rec, text, rid in documents(c["input"], c["text_key"], c["id_key"]):
            if p % tasks == index:
                pos.append(p), recs.append(rec), texts.append(text), ids.append(rid)
    except (OSError, ValueError) as e:
        raise bad(stage, "input", str(e)) from None
    return pos, recs, texts, ids


def assign_shard(task, c, step, folders) -> Dict[str, Any]:
    import numpy as np
    from scipy import sparse

    from jobs.adapters import embeddings

    tasks = task.spec["tasks_per_point"]
    pos, recs, texts, ids = shard_documents(c, step["stage"], task.index, tasks)
    fitted = folders.of(step["fit"], "output")
    with open(fitted / "embedder.pkl", "rb") as f:
        embedder = pickle.load(f)  # written by this stage's fit task, same environment
    centroids = np.load(fitted / "centroids.npy")
    embeddings.load_libraries(model=isinstance(c["embedding"], dict))
    t0 = time.time()
    if texts:
        emb, x = embeddings.embed_with(embedder, texts)
        labels, sims = embeddings.assign(emb, centroids)
    else:  # more tasks than documents: an empty shard
        emb, x = np.zeros((0, centroids.shape[1]), np.float32), sparse.csr_matrix((0, len(embedder["tfidf"].vocabulary_)))
        labels, sims = np.zeros(0, np.int32), np.zeros(0, np.float32)
    seconds = time.time() - t0
    out, name = folders.of(task.stage, "output"), f"{task.index:05d}"
    write_jsonl_gz(out / f"{name}.jsonl.gz", (with_meta(r, cluster=int(k)) for r, k in zip(recs, labels)))
    atomic_bytes(out / f"{name}.terms.npz", lambda f: sparse.save_npz(f, embeddings.term_sums(x, labels, c["k"])))
    atomic_bytes(out / f"{name}.npz", lambda f: np.savez(
        f, position=np.asarray(pos, np.int64), id=np.asarray(ids, dtype=str), cluster=labels, similarity=sims,
        embedding=emb, seconds=np.float64(seconds)))
    layout.atomic_write_json(folders.of(task.stage, "logs") / "stats" / f"{name}.json", [
        {"name": "📖 - READER: cluster shard", "stats": {"documents": len(recs)}},
        {"name": "💽 - WRITER: jsonl + npz", "stats": {"total": len(recs)}}])
    return {"documents": len(recs), "shard": task.index, "of": tasks, "seconds": round(seconds, 3),
            "documents_per_s": round(len(recs) / seconds, 1) if seconds > 0 else None, "output": str(out)}


# -- 3. SemDeDup and the report -----------------------------------------------------------------------

def gather(folder: Path, shards: int, stage: str):
    """Every shard's arrays and documents, back in input order: (arrays, records, term sums, the
    slowest shard's seconds). A missing shard is an error naming it (its assign task did not finish)."""
    missing = [i for i in range(shards) if not (folder / f"{i:05d}.npz").is_file()]
    if missing:
        raise FileNotFoundError(f"stage '{stage}': shard(s) {missing} of {shards} missing in {folder}: their "
                                f"assign tasks did not finish")
    import numpy as np
    from scipy import sparse

    parts, recs, sums, slowest = [], [], None, 0.0
    for i in range(shards):
        name = f"{i:05d}"
        with np.load(folder / f"{name}.npz") as z:
            parts.append({k: z[k] for k in ("position", "id", "cluster", "similarity", "embedding")})
            slowest = max(slowest, float(z["seconds"]))
        with gzip.open(folder / f"{name}.jsonl.gz", "rt", encoding="utf-8") as fh:
            recs += [json.loads(x) for x in fh if x.strip()]
        s = sparse.load_npz(folder / f"{name}.terms.npz")
        sums = s if sums is None else sums + s
    arrays = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    order = np.argsort(arrays["position"], kind="stable")
    return {k: v[order] for k, v in arrays.items()}, [recs[i] for i in order], sums, slowest


def topics(c, labels, keep, recs, ids, names) -> List[Dict[str, Any]]:
    import numpy as np

    out = []
    for k in range(c["k"]):
        rows = np.flatnonzero(labels == k)
        out.append({"cluster": k, "size": int(len(rows)), "label": " ".join(names[k]), "terms": names[k],
                    "removed": int((~keep[rows]).sum()),
                    "examples": [{"id": str(ids[i]), "text": recs[i][c["text_key"]][:SNIPPET]}
                                 for i in rows[:c["examples"]]]})
    return out


def dedup(task, c, step, folders) -> Dict[str, Any]:
    import numpy as np

    from jobs.adapters import embeddings

    fitted = folders.of(step["fit"], "output")
    fit_facts = json.loads((fitted / "fit.json").read_text())
    arrays, recs, sums, assign_s = gather(folders.of(step["assign"], "output"), step["shards"], task.stage)
    labels, ids, emb = arrays["cluster"], arrays["id"], arrays["embedding"]
    n = len(recs)
    t0 = time.time()
    sd = c["semdedup"]
    if sd["enabled"]:
        keep, dup_of, sim = semdedup.semdedup(emb, labels, sd["threshold"])
    else:
        keep, dup_of, sim = np.ones(n, dtype=bool), np.full(n, -1), np.zeros(n, dtype=np.float32)
    t1 = time.time()
    with open(fitted / "embedder.pkl", "rb") as f:
        terms = list(pickle.load(f)["tfidf"].get_feature_names_out())
    sizes = np.bincount(labels, minlength=c["k"])
    names = embeddings.top_terms(sums, sizes, terms, c["label_terms"])
    xy = embeddings.map_2d(emb, c["seed"])
    t2 = time.time()
    written = write_outputs(task, folders, c, recs, ids, labels, keep, dup_of, sim, names, xy)
    seconds = {"fit_embedder": fit_facts["seconds"]["fit_embedder"], "kmeans": fit_facts["seconds"]["kmeans"],
               "assign_slowest_shard": round(assign_s, 3), "semdedup": round(t1 - t0, 3),
               "labels_and_map": round(t2 - t1, 3)}
    # the critical path of the work a direct library script does too: fit, the slowest shard, dedup
    work = seconds["fit_embedder"] + seconds["kmeans"] + assign_s + (t1 - t0)
    return {"documents": n, **written, "k": c["k"], "dims": int(emb.shape[1]) if n else 0,
            "embedding": c["embedding"] if isinstance(c["embedding"], str) else "model",
            "threshold": sd["threshold"] if sd["enabled"] else None, "shards": step["shards"],
            "kmeans": {"library": "faiss", "spherical": True, **fit_facts["kmeans"]}, "seconds": seconds,
            "documents_per_s": round(n / work, 1) if work > 0 else None}


def write_outputs(task, folders, c, recs, ids, labels, keep, dup_of, sim, names, xy) -> Dict[str, Any]:
    """The kept and removed documents (datatrove layout), the stats, and the report in the task's folder."""
    n = len(recs)
    out_dir = folders.of(task.stage, "output")
    removed_dir = folders.of(task.stage, "removed") / REMOVED_BLOCK
    kept_n = write_jsonl_gz(out_dir / "00000.jsonl.gz",
                            (with_meta(recs[i], cluster=int(labels[i])) for i in range(n) if keep[i]))
    removed_n = write_jsonl_gz(removed_dir / "00000.jsonl.gz", (
        with_meta(recs[i], cluster=int(labels[i]), semdedup_of=str(ids[dup_of[i]]),
                  semdedup_similarity=round(float(sim[i]), 4)) for i in range(n) if not keep[i]))
    layout.atomic_write_json(folders.of(task.stage, "logs") / "stats" / "00000.json",
                             stats_blocks(n, kept_n, removed_n))
    own = task.ctx.output_dir
    own.mkdir(parents=True, exist_ok=True)
    write_jsonl_gz(own / "clusters.jsonl.gz", ({"id": str(ids[i]), "cluster": int(labels[i]), "kept": bool(keep[i])}
                                               for i in range(n)))
    topic_list = topics(c, labels, keep, recs, ids, names)
    (own / "topics.json").write_text(json.dumps(topic_list, indent=1, ensure_ascii=False) + "\n")
    png.scatter(own / "topic_map.png", [(float(a), float(b)) for a, b in xy], [int(v) for v in labels])
    return {"kept": kept_n, "removed": removed_n, "cluster_sizes": [t["size"] for t in topic_list],
            "labels": [t["label"] for t in topic_list], "output": str(out_dir), "removed_dir": str(removed_dir)}
