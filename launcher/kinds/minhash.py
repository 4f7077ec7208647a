"""kind=minhash: datatrove's MinHash deduplication, written once in the config, expanded by the plan
into four chained preprocess stages (<name>.signatures: tasks, .buckets: num_buckets, .clusters: 1,
.filter: tasks). It never reaches a node itself (jobs/kinds EXPANDED)."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Dict, List, Tuple

from jobs.layout import PLACEHOLDER, map_strings

from launcher.kinds.base import Kind, Problems

MINHASH = "datatrove.pipeline.dedup.minhash"
MINHASH_PARTS = ("signatures", "buckets", "clusters", "filter")  # the stages <name>.<part> a minhash stage becomes


@dataclass
class Minhash:
    """kind=minhash: datatrove's MinHash deduplication, written once, run as four array jobs
    (<stage>.signatures: tasks, .buckets: num_buckets, .clusters: 1, .filter: tasks)."""

    # Reads the documents to deduplicate (both the signature and the filter stage read them).
    reader: Dict[str, Any] = field(default_factory=lambda: {
        "_target_": "datatrove.pipeline.readers.JsonlReader", "data_folder": "{input}"})
    # Writes the documents that are kept.
    writer: Dict[str, Any] = field(default_factory=lambda: {
        "_target_": "datatrove.pipeline.writers.JsonlWriter", "output_folder": "{output}"})
    n_grams: int = 5
    num_buckets: int = 14
    hashes_per_bucket: int = 8
    seed: int = 1
    precision: int = 64  # signature hash bits (32 or 64)
    language: str = "en"  # word tokenizer for the shingles


def minhash_parts(name: str) -> List[str]:
    """The stage names a kind=minhash stage `name` expands into, in order."""
    return [f"{name}.{part}" for part in MINHASH_PARTS]


def _minhash_stages(name: str, st: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """One kind=minhash stage → signatures (tasks) → buckets (num_buckets) → clusters (1) → filter (tasks).
    The reader's {input} means the minhash stage's own parent, in both stages that read documents."""
    m = st["minhash"]
    parents = list(st["after"])
    original_input = f"{{input:{parents[0]}}}" if len(parents) == 1 else "{input}"
    reader = _replace_input(copy.deepcopy(m["reader"]), original_input)
    config = {"_target_": f"{MINHASH}.MinhashConfig", "n_grams": m["n_grams"], "num_buckets": m["num_buckets"],
              "hashes_per_bucket": m["hashes_per_bucket"], "seed": m["seed"],
              "hash_config": {"_target_": "datatrove.utils.hashing.HashConfig", "precision": m["precision"]}}

    def sub(tasks: int, after: Dict[str, str], blocks: List[Any]) -> Dict[str, Any]:
        d = copy.deepcopy(st)
        d.update(kind="preprocess", tasks=tasks, after=after, blocks=blocks)
        if tasks == 1:
            d["throttle"] = None
        return d

    signatures, buckets, clusters, last = minhash_parts(name)
    return {
        signatures: sub(st["tasks"], dict(st["after"]), [reader, {
            "_target_": f"{MINHASH}.MinhashDedupSignature", "output_folder": "{output}", "config": config,
            "language": m["language"]}]),
        buckets: sub(m["num_buckets"], {signatures: "afterok"}, [{
            "_target_": f"{MINHASH}.MinhashDedupBuckets", "input_folder": "{input}", "output_folder": "{output}",
            "config": config}]),
        clusters: sub(1, {buckets: "afterok"}, [{
            "_target_": f"{MINHASH}.MinhashDedupCluster", "input_folder": "{input}", "output_folder": "{output}",
            "config": config}]),
        last: sub(st["tasks"], {clusters: "afterok"}, [
            copy.deepcopy(reader), {"_target_": f"{MINHASH}.MinhashDedupFilter", "input_folder": f"{{input:{clusters}}}"},
            copy.deepcopy(m["writer"])]),
    }


def _replace_input(node: Any, value: str) -> Any:
    return map_strings(node, lambda x: x.replace("{input}", value))


def _rename_refs(node: Any, aliases: Dict[str, str]) -> Any:
    """{input:dedup} → {input:dedup.filter}: a stage that reads a minhash stage reads its last part."""
    return map_strings(node, lambda x: PLACEHOLDER.sub(
        lambda m: "{%s:%s}" % (m.group(1), aliases[m.group(2)]) if m.group(2) in aliases else m.group(0), x))


def expand(cfg: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, str]]:
    """A composed config with every kind=minhash stage replaced by its four stages; plus the aliases
    (minhash stage → its filter stage) that `after` and the blocks' placeholders of other stages are
    rewritten to. The input is not modified."""
    stages = cfg["pipeline"]["stages"]
    aliases = {n: minhash_parts(n)[-1] for n, st in stages.items() if st.get("kind") == "minhash"}
    if not aliases:
        return cfg, {}
    out: Dict[str, Dict[str, Any]] = {}
    for name, st in stages.items():
        st = dict(st, after={aliases.get(p, p): k for p, k in st["after"].items()})
        if st["kind"] == "minhash":
            st["minhash"] = _rename_refs(st["minhash"], aliases)
            out.update(_minhash_stages(name, st))
        else:
            if st["kind"] == "preprocess":
                st["blocks"] = _rename_refs(st["blocks"], aliases)
            out[name] = st
    return dict(cfg, pipeline=dict(cfg["pipeline"], stages=out)), aliases


class MinhashKind(Kind):
    name = "minhash"
    section, schema = "minhash", Minhash
    reads = ("minhash", "keep_removed")

    def expands_into(self, name: str) -> List[str]:
        return minhash_parts(name)

    def expand_pipeline(self, plain):
        expanded = [expand(p) for p in plain]
        return [e[0] for e in expanded], expanded[0][1]

    def check_before_expansion(self, p: Problems, st: Dict[str, Any]) -> None:
        m = st["minhash"]
        for k in ("n_grams", "num_buckets", "hashes_per_bucket"):
            if m[k] < 1:
                p.add(f"minhash.{k}", f"must be >= 1, got {m[k]}")
        if m["precision"] not in (32, 64):
            p.add("minhash.precision", f"must be 32 or 64, got {m['precision']}")
        for part in ("reader", "writer"):
            if not isinstance(m[part].get("_target_"), str):
                p.add(f"minhash.{part}", "needs a _target_ (a datatrove reader/writer class)")
        if len(st["after"]) != 1 and "{input}" in str(m["reader"]):
            p.add("minhash.reader", f"{{input}} needs exactly one stage in `after` (has {len(st['after'])}); "
                                    f"name one ({{input:<stage>}}) or a folder")


KIND = MinhashKind()
