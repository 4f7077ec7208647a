"""How kind=preprocess drives datatrove: build a stage's datatrove blocks and run this task's rank.

One array task is one datatrove rank (rank = task index within the sweep point, world size = the
stage's tasks), run through datatrove's own executor machinery, so its completions/, stats/ and logs/
land in the stage's folder of the run (jobs/layout.py) and a rerun skips ranks datatrove finished.
Blocks are built from {_target_: dotted.path, **kwargs} dicts, recursively (Hydra's convention,
without needing Hydra in the stage environment).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict

from datatrove.executor.base import DistributedEnvVars, PipelineExecutor

from jobs import layout
from jobs.runtime.targets import locate


def instantiate(node: Any) -> Any:
    """Build every {_target_: ..., **kwargs} dict, innermost first."""
    if isinstance(node, list):
        return [instantiate(v) for v in node]
    if isinstance(node, dict):
        built = {k: instantiate(v) for k, v in node.items() if k != "_target_"}
        return locate(node["_target_"])(**built) if "_target_" in node else built
    return node


def keep_removed(blocks: list, removed: Path) -> None:
    """Every block that can write what it drops (datatrove filters, MinhashDedupFilter) and has no
    exclusion writer gets one: removed/<i>-<Block>/, so `launcher inspect` can show it."""
    from datatrove.pipeline.writers import JsonlWriter

    for i, block in enumerate(blocks):
        if hasattr(block, "exclusion_writer") and block.exclusion_writer is None:
            block.exclusion_writer = JsonlWriter(str(removed / f"{i}-{type(block).__name__}"))


class ArrayTaskExecutor(PipelineExecutor):
    """Runs one rank of a datatrove pipeline: the rank this array task is (like datatrove's own
    SlurmPipelineExecutor does inside each of its array tasks)."""

    def __init__(self, pipeline, tasks: int, logging_dir: str):
        super().__init__(pipeline, logging_dir=logging_dir, skip_completed=True)
        self.tasks = tasks

    @property
    def world_size(self) -> int:
        return self.tasks

    def run(self, rank: int = 0):
        return self._run_for_rank(rank)

    def get_distributed_env(self, node_rank: int = -1) -> DistributedEnvVars:
        return DistributedEnvVars(
            datatrove_node_ips=os.environ.get("SLURMD_NODENAME", "localhost"),
            datatrove_cpus_per_task=os.environ.get("SLURM_CPUS_PER_TASK", "1"),
            datatrove_mem_per_cpu=os.environ.get("SLURM_MEM_PER_CPU", "-1"),
            datatrove_gpus_on_node=os.environ.get("SLURM_GPUS_ON_NODE", "0"),
            datatrove_executor="LAUNCHER")


def run_rank(spec: Dict[str, Any], payload: Dict[str, Any], point: int, rank: int, tasks: int) -> Dict[str, Any]:
    """Build the blocks, run `rank` of `tasks`; return what the rank did (datatrove's stats)."""
    folders = layout.Folders(spec, point)
    # URLFilter's tldextract fetches the Public Suffix List from publicsuffix.org when first used: on an
    # offline compute node that is a failed request and a traceback per rank before it falls back to its
    # bundled snapshot. An empty list of URLs is tldextract's own switch for "snapshot, no HTTP"; a
    # value set in the stage's environment wins.
    os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
    blocks = instantiate(folders.fill(payload["blocks"]))
    if payload.get("keep_removed", True):
        keep_removed(blocks, folders.of(spec["stage"], "removed"))
    logs = folders.of(spec["stage"], "logs")
    executor = ArrayTaskExecutor(blocks, tasks=tasks, logging_dir=str(logs))
    executor.run(rank)
    stats_file = logs / "stats" / f"{rank:05d}.json"
    return {"rank": rank, "world_size": tasks, "stats": json.loads(stats_file.read_text()) if stats_file.exists()
            else None, "output": str(folders.of(spec["stage"], "output"))}
