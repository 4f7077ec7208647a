"""The datatrove stage kinds on the login side: expanding `minhash` into its four array jobs, and
checking `blocks` (folder placeholders, targets). Pure functions over plain config dicts; datatrove is
never imported here (its classes are named by string and built on the compute node)."""
from __future__ import annotations

import copy
from typing import Any, Dict, Iterator, List, Tuple

from jobs.layout import PLACEHOLDER, map_strings

from launcher.errors import ConfigError

MINHASH = "datatrove.pipeline.dedup.minhash"
ONE_RANK_BLOCKS = ("TrainTokenizer",)  # blocks that raise unless world_size == 1 (jobs/adapters/datatrove_blocks.py)
MINHASH_PARTS = ("signatures", "buckets", "clusters", "filter")  # the stages <name>.<part> a minhash stage becomes


def minhash_parts(name: str) -> List[str]:
    """The stage names a kind=minhash stage `name` expands into, in order."""
    return [f"{name}.{part}" for part in MINHASH_PARTS]


def flatten(blocks: Any) -> List[Any]:
    """Blocks as a recipe writes them → one list. Nested lists and named groups ({name: block}, a dict
    without _target_) are spliced in order; null entries are dropped (data.filters.c4_quality=null)."""
    if blocks is None:
        return []
    if isinstance(blocks, dict) and "_target_" not in blocks:
        blocks = list(blocks.values())
    if not isinstance(blocks, list):
        return [blocks]
    return [b for item in blocks for b in flatten(item)]


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
    """A composed config with every kind=minhash stage replaced by its four stages and every block
    list flattened; plus the aliases (minhash stage → its filter stage) that `after` and placeholders
    of other stages are rewritten to. The input is not modified."""
    stages = cfg["pipeline"]["stages"]
    if not any(st.get("kind") in ("minhash", "preprocess") for st in stages.values()):
        return cfg, {}
    aliases = {n: minhash_parts(n)[-1] for n, st in stages.items() if st.get("kind") == "minhash"}
    out: Dict[str, Dict[str, Any]] = {}
    for name, st in stages.items():
        st = dict(st, after={aliases.get(p, p): k for p, k in st["after"].items()})
        if st["kind"] == "minhash":
            st["minhash"] = _rename_refs(st["minhash"], aliases)
            out.update(_minhash_stages(name, st))
        else:
            if st["kind"] == "preprocess":
                st["blocks"] = _rename_refs(flatten(st["blocks"]), aliases)
            out[name] = st
    cfg = dict(cfg, pipeline=dict(cfg["pipeline"], stages=out))
    return cfg, aliases


# -- checks (pure) ---------------------------------------------------------------------------------

def walk(node: Any, key: str) -> Iterator[Tuple[str, Any]]:
    """(config key, value) of every leaf and dict below node."""
    if isinstance(node, dict):
        yield key, node
        for k, v in node.items():
            yield from walk(v, f"{key}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, f"{key}.{i}")
    else:
        yield key, node


def targets(name: str, st: Dict[str, Any]) -> List[Tuple[str, str]]:
    """(config key, dotted target) of every block and nested object of a preprocess stage."""
    return [(f"{k}._target_", v["_target_"]) for k, v in walk(st["blocks"], f"pipeline.stages.{name}.blocks")
            if isinstance(v, dict) and isinstance(v.get("_target_"), str)]


def check_stage(name: str, st: Dict[str, Any], ancestors: set, errors: List[ConfigError]) -> None:
    """Blocks are {_target_: ...} dicts and their folder placeholders name stages this one waits for."""
    key = f"pipeline.stages.{name}.blocks"
    if not st["blocks"]:
        errors.append(ConfigError("kind=preprocess needs blocks (datatrove steps, each {_target_: ..., args})",
                                  stage=name, key=key))
    for i, b in enumerate(st["blocks"]):
        if not (isinstance(b, dict) and isinstance(b.get("_target_"), str) and b["_target_"].strip()):
            errors.append(ConfigError(f"a block must be a mapping with _target_ (a datatrove class), got {b!r:.80}",
                                      stage=name, key=f"{key}.{i}"))
    check_placeholders(name, st, [(k, v) for k, v in walk(st["blocks"], key) if isinstance(v, str)], ancestors, errors)
    for k, target in targets(name, st):
        if target.rsplit(".", 1)[-1].rsplit(":", 1)[-1] in ONE_RANK_BLOCKS and st["tasks"] != 1:
            errors.append(ConfigError(f"{target} sees every document in one rank: the stage needs tasks=1 (it has "
                                      f"{st['tasks']}; the block raises on the node otherwise)", stage=name,
                                      key=f"pipeline.stages.{name}.tasks"))


def check_placeholders(name: str, st: Dict[str, Any], strings: List[Tuple[str, str]], ancestors: set,
                       errors: List[ConfigError]) -> None:
    """Folder placeholders in (config key, string) pairs name stages this one waits for."""
    parents = list(st["after"])
    for k, v in strings:
        for m in PLACEHOLDER.finditer(v):
            what, ref = m.groups()
            if what == "input" and ref is None and len(parents) != 1:
                errors.append(ConfigError(f"{{input}} needs exactly one stage in `after` (has {len(parents)}); "
                                          f"name one: {{input:<stage>}}", stage=name, key=k))
            elif what == "input" and ref is not None and ref not in ancestors:
                errors.append(ConfigError(f"{{input:{ref}}}: '{ref}' is not a stage this one waits for "
                                          f"(directly or through `after`)", stage=name, key=k))
            elif what != "input" and ref is not None:
                errors.append(ConfigError(f"{{{what}}} takes no stage name", stage=name, key=k))


def local_inputs(name: str, st: Dict[str, Any]) -> List[Tuple[str, str]]:
    """(config key, path) of reader folders that are plain local paths (no placeholder, no URL)."""
    out = []
    for k, v in walk(st["blocks"], f"pipeline.stages.{name}.blocks"):
        if (k.endswith((".data_folder", ".input_folder")) and isinstance(v, str) and not PLACEHOLDER.search(v)
                and "://" not in v):
            out.append((k, v))
    return out


def check_minhash(name: str, st: Dict[str, Any], errors: List[ConfigError]) -> None:
    m, key = st["minhash"], f"pipeline.stages.{name}.minhash"
    for k in ("n_grams", "num_buckets", "hashes_per_bucket"):
        if m[k] < 1:
            errors.append(ConfigError(f"must be >= 1, got {m[k]}", stage=name, key=f"{key}.{k}"))
    if m["precision"] not in (32, 64):
        errors.append(ConfigError(f"must be 32 or 64, got {m['precision']}", stage=name, key=f"{key}.precision"))
    for part in ("reader", "writer"):
        if not isinstance(m[part].get("_target_"), str):
            errors.append(ConfigError("needs a _target_ (a datatrove reader/writer class)", stage=name,
                                      key=f"{key}.{part}"))
    if len(st["after"]) != 1 and "{input}" in str(m["reader"]):
        errors.append(ConfigError(f"{{input}} needs exactly one stage in `after` (has {len(st['after'])}); "
                                  f"name one ({{input:<stage>}}) or a folder", stage=name, key=f"{key}.reader"))
