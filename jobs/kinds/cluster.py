"""kind=cluster on the compute node: topic clustering and semantic deduplication (SemDeDup) of the
documents of a datatrove-readable input, in this task's process (one task per sweep point).

1. read every document of cluster.input (.jsonl/.jsonl.gz under a folder, sorted by path, as datatrove
   writes them; jobs/runtime/prompt_records.py input_files), in order;
2. embed: TF-IDF + TruncatedSVD (cluster.embedding: tfidf) or a local Hugging Face model with mean
   pooling ({model: <folder>}) (jobs/adapters/embeddings.py). TF-IDF is computed in both cases: it names
   the clusters;
3. k-means (scikit-learn KMeans) fitted on cluster.sample documents (all by default), every document
   assigned to its nearest centroid. k > the number of documents fails here, naming stage and cluster.k;
4. SemDeDup within each cluster at cosine > cluster.semdedup.threshold (jobs/runtime/semdedup.py);
5. outputs, datatrove layout (launcher/kinds/cluster.py output_layout):
     <datatrove output>/00000.jsonl.gz        the kept documents, as read, metadata.cluster added
     <datatrove removed>/0-SemDeDup/00000.jsonl.gz   the removed ones, metadata.cluster, semdedup_of
                                              (the kept id) and semdedup_similarity (`launcher inspect`)
     <datatrove logs>/stats/00000.json        reader / SemDeDup / writer counts (`launcher summary`)
   and in the task's output folder: topics.json (per cluster: size, label terms, removed, example
   snippets), clusters.jsonl.gz (id -> cluster, every document), topic_map.png (2-D PCA of the
   embeddings, one colour per cluster) and result.json (documents/s, cluster sizes, removed count).

Rerunning the task rewrites every file (each written to a temporary name, then renamed)."""
from __future__ import annotations

import gzip
import json
import os
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


def read_documents(source: str, text_key: str, id_key: str) -> Tuple[List[Dict[str, Any]], List[str], List[str]]:
    """(records as read, their texts, their ids) of every document under `source`, in file order."""
    recs, texts, ids = [], [], []
    for f, line_no, fallback, rec in prompt_records.raw_records(source):
        if not isinstance(rec.get(text_key), str):
            raise ValueError(f"{f} line {line_no + 1} has no string field {text_key!r}")
        rid = rec.get(id_key)
        recs.append(rec)
        texts.append(rec[text_key])
        ids.append(str(rid) if rid not in (None, "") else fallback)
    return recs, texts, ids


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


def with_meta(rec: Dict[str, Any], **meta) -> Dict[str, Any]:
    m = rec.get("metadata") if isinstance(rec.get("metadata"), dict) else {}
    return {**rec, "metadata": {**m, **meta}}


def embed(c: Dict[str, Any], texts: List[str]):
    """(embeddings n x d, tfidf n x V, terms)."""
    from jobs.adapters import embeddings

    x, terms = embeddings.tfidf_vectors(texts, c["max_features"])
    e = c["embedding"]
    if e == "tfidf":
        return embeddings.svd(x, c["dims"], c["seed"]), x, terms
    return embeddings.model_vectors(texts, e["model"], e.get("batch_size", 32), e.get("max_length", 256)), x, terms


def topics(c, labels, keep, texts, ids, names) -> List[Dict[str, Any]]:
    import numpy as np

    out = []
    for k in range(c["k"]):
        rows = np.flatnonzero(labels == k)
        out.append({"cluster": k, "size": int(len(rows)), "label": " ".join(names[k]), "terms": names[k],
                    "removed": int((~keep[rows]).sum()),
                    "examples": [{"id": ids[i], "text": texts[i][:SNIPPET]} for i in rows[:c["examples"]]]})
    return out


def stats_blocks(n: int, kept: int, removed: int) -> List[Dict[str, Any]]:
    """datatrove's stats file shape (launcher/reports/data_report.py block_rows reads it)."""
    return [{"name": "📖 - READER: cluster input", "stats": {"documents": n}},
            {"name": "🔻 - FILTER: SemDeDup", "stats": {"total": n, "forwarded": kept, "dropped": removed,
                                                       **({"dropped_semdedup": removed} if removed else {})}},
            {"name": "💽 - WRITER: jsonl", "stats": {"total": kept}}]


def run(task) -> Dict[str, Any]:
    import numpy as np

    from jobs.adapters import embeddings

    task.export_environment()
    c = dict(task.payload["cluster"])
    folders = layout.Folders(task.spec, task.point)
    c["input"] = folders.fill(c["input"])
    if isinstance(c["embedding"], dict):
        c["embedding"] = dict(c["embedding"], model=folders.fill(c["embedding"]["model"]))
    try:
        recs, texts, ids = read_documents(c["input"], c["text_key"], c["id_key"])
    except (OSError, ValueError) as e:
        raise bad(task.stage, "input", str(e)) from None
    n = len(recs)
    if c["k"] > n:
        raise bad(task.stage, "k", f"k={c['k']} clusters but {c['input']} holds {n} document(s): use k <= {n}")
    if c["sample"] and c["sample"] > n:
        c["sample"] = None  # more than there is: fit on all
    embeddings.load_libraries(model=isinstance(c["embedding"], dict))
    t0 = time.time()
    emb, x, terms = embed(c, texts)
    t1 = time.time()
    labels, _, km = embeddings.kmeans(emb, c["k"], c["sample"], c["seed"])
    t2 = time.time()
    sd = c["semdedup"]
    if sd["enabled"]:
        keep, dup_of, sim = semdedup.semdedup(emb, labels, sd["threshold"])
    else:
        keep, dup_of, sim = np.ones(n, dtype=bool), np.full(n, -1), np.zeros(n, dtype=np.float32)
    t3 = time.time()
    names = embeddings.top_terms(x, terms, labels, c["k"], c["label_terms"])
    xy = embeddings.map_2d(emb, c["seed"])
    t4 = time.time()

    out_dir = folders.of(task.stage, "output")
    removed_dir = folders.of(task.stage, "removed") / REMOVED_BLOCK
    kept_n = write_jsonl_gz(out_dir / "00000.jsonl.gz",
                            (with_meta(recs[i], cluster=int(labels[i])) for i in range(n) if keep[i]))
    removed_n = write_jsonl_gz(removed_dir / "00000.jsonl.gz", (
        with_meta(recs[i], cluster=int(labels[i]), semdedup_of=ids[dup_of[i]],
                  semdedup_similarity=round(float(sim[i]), 4)) for i in range(n) if not keep[i]))
    layout.atomic_write_json(folders.of(task.stage, "logs") / "stats" / "00000.json",
                             stats_blocks(n, kept_n, removed_n))
    own = task.ctx.output_dir
    own.mkdir(parents=True, exist_ok=True)
    write_jsonl_gz(own / "clusters.jsonl.gz", ({"id": ids[i], "cluster": int(labels[i]), "kept": bool(keep[i])}
                                               for i in range(n)))
    topic_list = topics(c, labels, keep, texts, ids, names)
    (own / "topics.json").write_text(json.dumps(topic_list, indent=1, ensure_ascii=False) + "\n")
    png.scatter(own / "topic_map.png", [(float(a), float(b)) for a, b in xy], [int(v) for v in labels])
    seconds = t3 - t0  # embed + k-means + dedup: the work a direct library call does too
    return {"documents": n, "kept": kept_n, "removed": removed_n, "k": c["k"], "dims": int(emb.shape[1]),
            "embedding": c["embedding"] if isinstance(c["embedding"], str) else "model",
            "cluster_sizes": [t["size"] for t in topic_list], "labels": [t["label"] for t in topic_list],
            "threshold": sd["threshold"] if sd["enabled"] else None, "kmeans": km,
            "seconds": {"embed": round(t1 - t0, 3), "kmeans": round(t2 - t1, 3), "semdedup": round(t3 - t2, 3),
                        "labels_and_map": round(t4 - t3, 3)},
            "documents_per_s": round(n / seconds, 1) if seconds > 0 else None,
            "output": str(out_dir), "removed_dir": str(removed_dir)}
