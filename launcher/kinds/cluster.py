"""kind=cluster (topic clustering and semantic deduplication, SemDeDup) on the login side: its config
section, the checks made before submission, the expansion into three stages and what preflight reads.
The node side is jobs/kinds/cluster.py; the dedup rule and the input reader are shared with it
(jobs/runtime/semdedup.py, which imports only numpy inside its functions, so this module stays free of
stage libraries).

k-means sharded the usual way: one config stage <name> becomes three stages of this kind (expand), each
told its part by cluster.step (set here, never written in a config):
    <name>_fit     1 task      seeded sample -> fitted embedder (TF-IDF [+ SVD]) + faiss centroids
    <name>_assign  tasks       shard i of N (positions p % N == i) -> embeddings, nearest centroid
    <name>         1 task      every shard -> SemDeDup within clusters, topics.json, the map; the kept
                               documents are its datatrove output, so {input:<name>} keeps its meaning
assign waits on fit (afterok), the last on assign (afterok); the fit stage takes the written `after`.
The last part is one task: a cluster's documents come from every shard (docs/cluster.md says why).

Before submission a stage is refused, naming the stage and the key, when
  - cluster.k < 2, cluster.semdedup.threshold is outside (0, 1], cluster.embedding is neither "tfidf"
    nor {model: <folder>}, cluster.dims < 2, cluster.sample < k, tasks < 1, {input} without exactly
    one parent in `after`;
  - (preflight) a plain input path or model folder does not exist, or k is larger than the number of
    documents of a plain input path (read up to DATA_CHECK_MAX_BYTES).
When only the node sees the data ({input} of a parent, a larger file), k larger than the number of
documents is checked at the fit task's start, with the same message naming the stage and cluster.k."""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from jobs.layout import PLACEHOLDER, map_strings
from jobs.runtime import prompt_records

from launcher.errors import ConfigError
from launcher.kinds.base import DATA_CHECK_MAX_BYTES, Kind, Problems
from launcher.config.placeholders import check_placeholders

EMBEDDINGS = ("tfidf",)  # model-free choices; otherwise {model: <local HF folder>}
PARTS = ("fit", "assign")  # the stages <name>_<part> a cluster stage adds before itself (the last part)


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
    sample: Optional[int] = None  # documents the embedder and k-means are fitted on (null: all); every one is assigned
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
    if st["resources"]["nodes"] != 1:
        p.add("resources.nodes", f"one process on one node, got {st['resources']['nodes']}")


def part_names(name: str) -> List[str]:
    """The stages a cluster stage `name` adds before itself: [<name>_fit, <name>_assign]."""
    return [f"{name}_{part}" for part in PARTS]


def _cluster_stages(name: str, st: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """One cluster stage -> fit (1 task) -> assign (`tasks`) -> itself (1 task). {input} means the
    written stage's one parent in all three (the fit stage keeps the written `after`)."""
    fit, assign = part_names(name)
    parents = list(st["after"])
    section = copy.deepcopy(st["cluster"])
    if len(parents) == 1:
        section = map_strings(section, lambda x: x.replace("{input}", f"{{input:{parents[0]}}}"))

    def sub(tasks: int, after: Dict[str, str], step: Dict[str, Any]) -> Dict[str, Any]:
        d = copy.deepcopy(st)
        d.update(tasks=tasks, after=after, cluster={**copy.deepcopy(section), "step": step})
        if tasks == 1:
            d["throttle"] = None
        return d

    return {fit: sub(1, dict(st["after"]), {"part": "fit", "stage": name}),
            assign: sub(st["tasks"], {fit: "afterok"}, {"part": "assign", "stage": name, "fit": fit}),
            name: sub(1, {assign: "afterok"}, {"part": "dedup", "stage": name, "fit": fit, "assign": assign,
                                               "shards": st["tasks"]})}


def expand(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """A composed config with every cluster stage replaced by its three stages (new dicts)."""
    stages = cfg["pipeline"]["stages"]
    if not any(st.get("kind") == ClusterKind.name for st in stages.values()):
        return cfg
    out: Dict[str, Dict[str, Any]] = {}
    for name, st in stages.items():
        if st["kind"] == ClusterKind.name and not st["cluster"].get("step"):
            out.update(_cluster_stages(name, st))
        else:
            out[name] = st
    return dict(cfg, pipeline=dict(cfg["pipeline"], stages=out))


def step_of(st: Dict[str, Any]) -> Dict[str, Any]:
    """cluster.step of an expanded stage (or of one payload); a written stage is its own last part."""
    return st["cluster"].get("step") or {"part": "dedup"}


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

    def expands_into(self, name: str) -> List[str]:
        return part_names(name)  # and itself, its last part

    def expand_pipeline(self, plain):
        return [expand(p) for p in plain], {}

    def check_before_expansion(self, p: Problems, st: Dict[str, Any]) -> None:
        if st["tasks"] < 1:
            p.add("tasks", f"the assign part's array tasks: must be >= 1, got {st['tasks']}")
        if len(st["after"]) != 1 and "{input}" in str(st["cluster"]):
            p.add("cluster.input", f"{{input}} needs exactly one stage in `after` (has {len(st['after'])}); "
                                   f"name one ({{input:<stage>}}) or a folder")

    def check_config(self, p: Problems, st) -> None:
        if step_of(st)["part"] == "dedup":  # the stage with the written name: checked once, named as written
            check_section(p, st)

    def check_in_dag(self, p: Problems, st, stages, ancestors) -> None:
        c = st["cluster"]
        strings = [(f"{p.key}.cluster.input", c["input"])]
        if isinstance(c["embedding"], dict) and isinstance(c["embedding"].get("model"), str):
            strings.append((f"{p.key}.cluster.embedding.model", c["embedding"]["model"]))
        check_placeholders(p.stage, st, strings, ancestors, p.errors)

    def preflight(self, plan, stage) -> List[ConfigError]:
        errors = {}
        for payload in stage.payloads if step_of(stage.payloads[0])["part"] == "dedup" else ():
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
        if step_of(stage.payloads[0])["part"] != "fit":  # the environment is one: checked once, where it fits
            return []
        key = f"pipeline.stages.{step_of(stage.payloads[0])['stage']}.cluster"
        out = [(key, "faiss.Kmeans"), (f"{key}.embedding", "sklearn.decomposition.TruncatedSVD")]
        if any(isinstance(p["cluster"]["embedding"], dict) for p in stage.payloads):
            out.append((f"{key}.embedding.model", "transformers.AutoModel"))
        return out

    def describe(self, plan, stage, plan_dir: Path) -> List[str]:
        c = stage.payloads[0]["cluster"]
        step = step_of(stage.payloads[0])
        e = c["embedding"]
        how = (f"TF-IDF ({c['max_features']} terms) + TruncatedSVD to {c['dims']} dims" if e == "tfidf"
               else f"{e.get('model')} (mean pooling)")
        if step["part"] == "fit":
            return [f"{stage.name}: fits {how} and faiss k-means (spherical, k={c['k']}) on "
                    f"{c['sample'] or 'all'} document(s) of {c['input']} drawn with seed {c['seed']}"]
        if step["part"] == "assign":
            return [f"{stage.name}: {stage.tasks_per_point} task(s), each embeds its shard of {c['input']} "
                    f"(positions p % {stage.tasks_per_point}) and assigns it to the nearest centroid"]
        dedup = (f"SemDeDup within each cluster at cosine > {c['semdedup']['threshold']} (removed documents in "
                 f"removed/0-SemDeDup/)" if c["semdedup"]["enabled"] else "no dedup")
        return [f"{stage.name}: gathers the {step.get('shards', 1)} shard(s); clusters named by their top "
                f"{c['label_terms']} TF-IDF terms; {dedup}; topics.json and topic_map.png beside result.json"]


KIND = ClusterKind()
