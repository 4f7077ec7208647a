"""kind=cluster (topic clustering and semantic deduplication, SemDeDup) on the login side: its config
section, the checks made before submission and what preflight reads. The node side is
jobs/kinds/cluster.py; the dedup rule and the input reader are shared with it (jobs/runtime/semdedup.py,
which imports only numpy inside its functions, so this module stays free of stage libraries).

One array task per sweep point does the whole stage (embed -> k-means on a sample -> assign -> labels
-> SemDeDup), not three array stages (sample -> centroids -> assign): the TF-IDF vocabulary and the SVD
must be fitted on the documents before anything can be assigned, so a sharded design needs the
embeddings written and read back between stages, which costs more than it saves at the sizes a CPU
node embeds in one go (docs/cluster.md has the numbers and when to split it).

Before submission a stage is refused, naming the stage and the key, when
  - cluster.k < 2, cluster.semdedup.threshold is outside (0, 1], cluster.embedding is neither "tfidf"
    nor {model: <folder>}, cluster.dims < 2, cluster.sample < k, tasks != 1;
  - (preflight) a plain input path or model folder does not exist, or k is larger than the number of
    documents of a plain input path (read up to DATA_CHECK_MAX_BYTES).
When only the node sees the data ({input} of a parent, a larger file), k larger than the number of
documents is checked at the task's start, with the same message naming the stage and cluster.k."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from jobs.layout import PLACEHOLDER
from jobs.runtime import prompt_records

from launcher.errors import ConfigError
from launcher.kinds.base import DATA_CHECK_MAX_BYTES, Kind, Problems
from launcher.config.placeholders import check_placeholders

EMBEDDINGS = ("tfidf",)  # model-free choices; otherwise {model: <local HF folder>}


@dataclass
class SemDedup:
    """Semantic dedup within each cluster: a document whose cosine similarity to a document already kept
    (input order) is above `threshold` is removed (written to removed/0-SemDeDup/ for `launcher inspect`)."""

    enabled: bool = True
    threshold: float = 0.95  # in (0, 1]; 1 removes nothing


@dataclass
class Cluster:
    """kind=cluster: embed the documents of a datatrove-readable input, k-means, topic labels and report,
    SemDeDup. The kept documents are the stage's datatrove output ({input:<stage>} for the next stage)."""

    input: str = "{input}"  # a folder of .jsonl/.jsonl.gz documents (datatrove's layout) or one file
    text_key: str = "text"
    id_key: str = "id"  # absent: "<file>:<line>"
    # "tfidf": scikit-learn TfidfVectorizer + TruncatedSVD (model-free); or {model: <local HF folder>,
    # batch_size: 32, max_length: 256}: transformers AutoModel, mean pooling over the attention mask
    embedding: Any = "tfidf"
    dims: int = 128  # TruncatedSVD components (tfidf); at most the vocabulary size - 1
    max_features: int = 50000  # TF-IDF vocabulary
    k: int = 8  # clusters
    sample: Optional[int] = None  # documents k-means is fitted on (null: all); every document is assigned
    seed: int = 0
    label_terms: int = 5  # top TF-IDF terms that name a cluster
    examples: int = 3  # example snippets per cluster in topics.json
    semdedup: SemDedup = field(default_factory=SemDedup)


def embedding_problem(e: Any) -> str:
    """'' when cluster.embedding is valid."""
    if isinstance(e, str):
        return "" if e in EMBEDDINGS else f"unknown embedding {e!r}: use 'tfidf' or {{model: <local HF folder>}}"
    if isinstance(e, dict):
        unknown = set(e) - {"model", "batch_size", "max_length"}
        if unknown:
            return f"unknown key(s) {sorted(unknown)} (an embedding model takes model, batch_size, max_length)"
        if not isinstance(e.get("model"), str) or not e["model"]:
            return "an embedding model needs model: <local Hugging Face folder>"
        for k in ("batch_size", "max_length"):
            if k in e and not (isinstance(e[k], int) and e[k] >= 1):
                return f"{k} must be an integer >= 1, got {e[k]!r}"
        return ""
    return f"must be 'tfidf' or {{model: <local HF folder>}}, got {e!r}"


def check_section(p: Problems, st: Dict[str, Any]) -> None:
    c = st["cluster"]
    if c["k"] < 2:
        p.add("cluster.k", f"must be >= 2 (one cluster is no clustering), got {c['k']}")
    t = c["semdedup"]["threshold"]
    if not 0 < t <= 1:
        p.add("cluster.semdedup.threshold", f"a cosine similarity in (0, 1], got {t}")
    if problem := embedding_problem(c["embedding"]):
        p.add("cluster.embedding", problem)
    if c["dims"] < 2:
        p.add("cluster.dims", f"must be >= 2 (the 2-D map needs two), got {c['dims']}")
    if c["max_features"] < 2:
        p.add("cluster.max_features", f"must be >= 2, got {c['max_features']}")
    if c["sample"] is not None and c["sample"] < c["k"]:
        p.add("cluster.sample", f"k-means needs at least k={c['k']} sampled documents, got {c['sample']}")
    for k in ("label_terms", "examples"):
        if c[k] < 0:
            p.add(f"cluster.{k}", f"must be >= 0, got {c[k]}")
    if not c["text_key"]:
        p.add("cluster.text_key", "must name the documents' text field")
    if st["tasks"] != 1:
        p.add("tasks", f"kind=cluster runs one task per sweep point (embed, k-means and dedup in one process; "
                       f"docs/cluster.md), got {st['tasks']}")
    if st["resources"]["nodes"] != 1:
        p.add("resources.nodes", f"one process on one node, got {st['resources']['nodes']}")


def plain(name: str, c: Dict[str, Any]) -> List[Tuple[str, str]]:
    """(config key, path) of the input and the embedding model when they are plain paths."""
    key = f"pipeline.stages.{name}.cluster"
    out = [(f"{key}.input", c["input"])]
    if isinstance(c["embedding"], dict) and isinstance(c["embedding"].get("model"), str):
        out.append((f"{key}.embedding.model", c["embedding"]["model"]))
    return [(k, v) for k, v in out if v and not PLACEHOLDER.search(v) and "://" not in v]


def count_documents(source: str, limit_bytes: int = DATA_CHECK_MAX_BYTES) -> Optional[int]:
    """Non-empty lines of the input's files, None when they hold more than limit_bytes (uncompressed)
    or cannot be read (the task reads them and says so)."""
    import gzip

    n, seen = 0, 0
    try:
        for f in prompt_records.input_files(source):
            with (gzip.open(f, "rb") if f.name.endswith(".gz") else open(f, "rb")) as fh:
                for line in fh:
                    seen += len(line)
                    if seen > limit_bytes:
                        return None
                    n += bool(line.strip())
    except (OSError, EOFError):
        return None
    return n


class ClusterKind(Kind):
    name = "cluster"
    section, schema = "cluster", Cluster
    payload_keys = ("cluster",)
    output_layout = "datatrove"  # kept documents in output/, removed ones in removed/0-SemDeDup/ (inspect)
    reads_stage_outputs = True

    def check_config(self, p: Problems, st) -> None:
        check_section(p, st)

    def check_in_dag(self, p: Problems, st, stages, ancestors) -> None:
        c = st["cluster"]
        strings = [(f"{p.key}.cluster.input", c["input"])]
        if isinstance(c["embedding"], dict) and isinstance(c["embedding"].get("model"), str):
            strings.append((f"{p.key}.cluster.embedding.model", c["embedding"]["model"]))
        check_placeholders(p.stage, st, strings, ancestors, p.errors)

    def preflight(self, plan, stage) -> List[ConfigError]:
        errors = {}
        for payload in stage.payloads:
            for k, path in plain(stage.name, payload["cluster"]):
                if not os.path.exists(path):
                    errors[k] = ConfigError(f"{path} does not exist", stage=stage.name, key=k)
                elif k.endswith(".model") and not os.path.isfile(os.path.join(path, "config.json")):
                    errors[k] = ConfigError(f"{path} is not a Hugging Face model folder (no config.json)",
                                            stage=stage.name, key=k)
                elif k.endswith(".input") and (n := count_documents(path)) is not None and n < payload["cluster"]["k"]:
                    key = f"pipeline.stages.{stage.name}.cluster.k"
                    errors[key] = ConfigError(f"k={payload['cluster']['k']} clusters but {path} holds {n} "
                                              f"document(s): use k <= {n}", stage=stage.name, key=key)
        return list(errors.values())

    def targets(self, stage) -> List[Tuple[str, str]]:
        key = f"pipeline.stages.{stage.name}.cluster"
        out = [(key, "sklearn.cluster.KMeans"), (f"{key}.embedding", "sklearn.decomposition.TruncatedSVD")]
        if any(isinstance(p["cluster"]["embedding"], dict) for p in stage.payloads):
            out.append((f"{key}.embedding.model", "transformers.AutoModel"))
        return out

    def describe(self, plan, stage, plan_dir: Path) -> List[str]:
        c = stage.payloads[0]["cluster"]
        e = c["embedding"]
        how = (f"TF-IDF ({c['max_features']} terms) + TruncatedSVD to {c['dims']} dims" if e == "tfidf"
               else f"{e.get('model')} (mean pooling)")
        dedup = (f"SemDeDup within each cluster at cosine > {c['semdedup']['threshold']} (removed documents in "
                 f"removed/0-SemDeDup/)" if c["semdedup"]["enabled"] else "no dedup")
        return [f"{stage.name}: embeds {c['input']} with {how}; k-means k={c['k']} fitted on "
                f"{c['sample'] or 'all'} document(s), every document assigned; clusters named by their top "
                f"{c['label_terms']} TF-IDF terms; {dedup}; topics.json and topic_map.png beside result.json"]


KIND = ClusterKind()
