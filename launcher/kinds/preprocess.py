"""kind=preprocess: a datatrove pipeline (`blocks`), one datatrove rank per array task. Login side:
flattening the block lists, checking them (folder placeholders, targets, one-rank blocks) and the
local folders they read. datatrove is never imported here (its classes are named by string and built
on the compute node)."""
from __future__ import annotations

import os
from typing import Any, Dict, List, Tuple

from jobs.layout import PLACEHOLDER

from launcher.errors import ConfigError
from launcher.kinds.base import Kind, Problems, placeholder_stages
from launcher.config.placeholders import check_placeholders, walk

ONE_RANK_BLOCKS = ("TrainTokenizer",)  # blocks that raise unless world_size == 1 (jobs/adapters/datatrove_blocks.py)


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


def targets(name: str, st: Dict[str, Any]) -> List[Tuple[str, str]]:
    """(config key, dotted target) of every block and nested object of a preprocess stage."""
    return [(f"{k}._target_", v["_target_"]) for k, v in walk(st["blocks"], f"pipeline.stages.{name}.blocks")
            if isinstance(v, dict) and isinstance(v.get("_target_"), str)]


def local_inputs(name: str, st: Dict[str, Any]) -> List[Tuple[str, str]]:
    """(config key, path) of reader folders that are plain local paths (no placeholder, no URL)."""
    out = []
    for k, v in walk(st["blocks"], f"pipeline.stages.{name}.blocks"):
        if (k.endswith((".data_folder", ".input_folder")) and isinstance(v, str) and not PLACEHOLDER.search(v)
                and "://" not in v):
            out.append((k, v))
    return out


class Preprocess(Kind):
    name = "preprocess"
    payload_keys = ("blocks", "keep_removed")
    output_layout = "datatrove"
    reads_stage_outputs = True

    def expand_pipeline(self, plain):
        """Every preprocess stage's blocks as one flat list."""
        def flat(cfg):
            stages = cfg["pipeline"]["stages"]
            if not any(st.get("kind") == self.name for st in stages.values()):
                return cfg
            stages = {n: dict(st, blocks=flatten(st["blocks"])) if st.get("kind") == self.name else st
                      for n, st in stages.items()}
            return dict(cfg, pipeline=dict(cfg["pipeline"], stages=stages))

        return [flat(cfg) for cfg in plain], {}

    def reads_from(self, payload: Dict[str, Any], parents: List[str]) -> List[str]:
        """Datatrove blocks see other stages' folders only through placeholders: a parent no block
        names is an ordering edge, not an input (the ablation's tokenizer waits for dedup but reads
        the raw documents)."""
        return placeholder_stages(payload, parents)

    def check_in_dag(self, p: Problems, st, stages, ancestors) -> None:
        """Blocks are {_target_: ...} dicts and their folder placeholders name stages this one waits for."""
        name, key = p.stage, f"{p.key}.blocks"
        if not st["blocks"]:
            p.add("blocks", "kind=preprocess needs blocks (datatrove steps, each {_target_: ..., args})")
        for i, b in enumerate(st["blocks"]):
            if not (isinstance(b, dict) and isinstance(b.get("_target_"), str) and b["_target_"].strip()):
                p.add(f"blocks.{i}", f"a block must be a mapping with _target_ (a datatrove class), got {b!r:.80}")
        check_placeholders(name, st, [(k, v) for k, v in walk(st["blocks"], key) if isinstance(v, str)], ancestors,
                           p.errors)
        for k, target in targets(name, st):
            if target.rsplit(".", 1)[-1].rsplit(":", 1)[-1] in ONE_RANK_BLOCKS and st["tasks"] != 1:
                p.add("tasks", f"{target} sees every document in one rank: the stage needs tasks=1 (it has "
                               f"{st['tasks']}; the block raises on the node otherwise)")

    def preflight(self, plan, stage) -> List[ConfigError]:
        return [ConfigError(f"input folder {path} does not exist", stage=stage.name, key=key)
                for key, path in dict.fromkeys(kp for p in stage.payloads for kp in local_inputs(stage.name, p))
                if not os.path.exists(path)]

    def targets(self, stage) -> List[Tuple[str, str]]:
        return [t for p in stage.payloads for t in targets(stage.name, p)]


KIND = Preprocess()
