"""Node health checks, login side: the profile's `cluster.health_check` checked at plan time, which
tasks run it (their spec's "health_check"), and the nodes a run found bad (jobs/runtime/health.py
records them) excluded from every later submission of the run (`--exclude`). The check itself runs
on the nodes (jobs/runtime/health.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

from jobs import layout
from launcher import backends, kinds
from launcher.errors import ConfigError
from launcher.sbatch.options import node_gpus


def check(cluster: Dict[str, Any], errors: List[ConfigError]) -> None:
    """Append a ConfigError per bad `cluster.health_check` value (every number positive, the requeues >= 0)."""
    h = cluster.get("health_check") or {}
    for k in ("min_allreduce_gbps", "allreduce_mb", "timeout_s"):
        if h.get(k) is not None and not h[k] > 0:
            errors.append(ConfigError(f"must be positive, got {h[k]}", key=f"cluster.health_check.{k}"))
    if h.get("min_free_gb") is not None and h["min_free_gb"] < 0:
        errors.append(ConfigError(f"must be >= 0 (GB), got {h['min_free_gb']}", key="cluster.health_check.min_free_gb"))
    if h.get("max_requeues") is not None and h["max_requeues"] < 0:
        errors.append(ConfigError(f"must be >= 0, got {h['max_requeues']}", key="cluster.health_check.max_requeues"))


def spec_part(cluster: Dict[str, Any], stage) -> Optional[Dict[str, Any]]:
    """What a task's spec says of the health check, or None when its tasks skip it: only on Slurm, for a
    task that spans several nodes (a multi-process kind: one jobs.task per node) or asks for GPUs in any
form (launcher/sbatch/options.py node_gpus; "gpus_per_node" in the result is that count per node).
    `imports`: the modules its interpreter must import (Kind.health_imports); `across_nodes`: every node
    runs the check and they meet (else the task checks the node it runs on)."""
    h = cluster.get("health_check") or {}
    if not backends.get(cluster["backend"]).node_health_checks or not h.get("enabled", True):
        return None
    kind, r = kinds.get(stage.kind), stage.resources
    multi_node = r.get("nodes", 1) > 1 and kind.multi_process(stage.payloads[0])
    gpus = node_gpus(r)  # gpus_per_node, gres gpu or gpus_per_task x ntasks_per_node
    if not multi_node and not gpus:
        return None
    # across_nodes: one jobs.task per node checks and the nodes meet; else the task checks its own node
    return {**h, "imports": list(kind.health_imports), "gpus_per_node": gpus,
            "across_nodes": multi_node}


def exclude_bad_nodes(plan, run_dir: Path) -> List[str]:
    """Add the run's bad nodes to every stage's `resources.exclude` (also each resource group's), so
    that no later submission of the run lands on them. Returns the nodes added (sorted)."""
    bad = sorted(layout.bad_nodes(run_dir))
    if not bad:
        return []
    for stage in plan.stages.values():
        for r in [stage.resources, *stage.group_resources]:
            have = [x for x in (r.get("exclude") or "").split(",") if x]
            r["exclude"] = ",".join(have + [n for n in bad if n not in have])
    return bad
