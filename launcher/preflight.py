"""Checks against the live cluster, before anything is submitted. Each error names stage and key."""
from __future__ import annotations

import getpass
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, List, Optional

from .errors import ConfigError
from .plan import Plan, StagePlan
from .slurm import ClusterInfo


def _key(stage: StagePlan, k: str) -> str:
    return f"pipeline.stages.{stage.name}.resources.{k}"


def check_slurm_stage(stage: StagePlan, cluster: dict, info: ClusterInfo) -> List[ConfigError]:
    errors: List[ConfigError] = []
    r = stage.resources

    def bad(k: str, msg: str) -> None:
        errors.append(ConfigError(msg, stage=stage.name, key=_key(stage, k)))

    name = r["partition"] or cluster.get("partition") or info.default_partition
    key = "partition" if r["partition"] else None
    if name is None:
        bad("partition", "no partition given and the cluster has no default partition")
        return errors
    part = info.partitions.get(name)
    if part is None:
        msg = f"partition '{name}' does not exist (partitions: {', '.join(sorted(info.partitions))})"
        if key:
            bad(key, msg)
        else:
            errors.append(ConfigError(msg, stage=stage.name, key="cluster.partition"))
        return errors
    if part.max_time_min is not None and stage.time_min > part.max_time_min:
        bad("time", f"{r['time']} ({stage.time_min} min) is over partition '{name}' MaxTime "
                    f"({part.max_time_min} min)")
    if r["nodes"] > len(part.nodes) or (part.max_nodes is not None and r["nodes"] > part.max_nodes):
        bad("nodes", f"{r['nodes']} node(s) requested, partition '{name}' has {len(part.nodes)}"
                     + (f" (MaxNodes={part.max_nodes})" if part.max_nodes is not None else ""))
    fits = part.nodes
    for k, need, have in (
        ("gpus_per_node", r["gpus_per_node"], lambda n: n.gpus),
        ("cpus_per_task", r["cpus_per_task"] * r["ntasks_per_node"], lambda n: n.cpus),
        ("mem_gb", (r["mem_gb"] or 0) * 1024, lambda n: n.mem_mb),
    ):
        if need and not any(have(n) >= need for n in fits):
            best = max((have(n) for n in part.nodes), default=0)
            unit = {"mem_gb": f"{best / 1024:.1f} GB"}.get(k, str(best))
            what = {"gpus_per_node": f"{need} GPUs per node", "mem_gb": f"{r['mem_gb']} GB of memory",
                    "cpus_per_task": f"{need} CPUs per node (cpus_per_task x ntasks_per_node)"}[k]
            bad(k, f"{what} requested, but no node in partition '{name}' has that much (largest: {unit})")
            break  # one shortage is the news; the next would only repeat it
        fits = [n for n in fits if have(n) >= need]
    return errors


def check_local_stage(stage: StagePlan, cluster: dict) -> List[ConfigError]:
    errors: List[ConfigError] = []
    r = stage.resources
    if r["nodes"] > 1:
        errors.append(ConfigError(f"{r['nodes']} nodes requested; cluster=local is one machine",
                                  stage=stage.name, key=_key(stage, "nodes")))
    if r["gpus_per_node"] > cluster.get("gpus_per_node", 0):
        errors.append(ConfigError(f"{r['gpus_per_node']} GPUs requested; cluster=local offers "
                                  f"{cluster.get('gpus_per_node', 0)} (cluster.gpus_per_node)",
                                  stage=stage.name, key=_key(stage, "gpus_per_node")))
    return errors


def check_common(plan: Plan, run_root: Path) -> List[ConfigError]:
    errors: List[ConfigError] = []
    cl = plan.cluster
    try:
        run_root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=run_root, prefix=".write-test-"):
            pass
    except OSError as e:
        errors.append(ConfigError(f"run root {run_root} is not writable: {e.strerror or e}", key="run_root"))
    python = cl.get("python") or sys.executable
    if not (os.path.isfile(python) and os.access(python, os.X_OK)):
        errors.append(ConfigError(f"interpreter {python} does not exist or is not executable", key="cluster.python"))
    if cl.get("setup") and (msg := _bash_syntax_error("\n".join(cl["setup"]))):
        errors.append(ConfigError(f"setup lines are not valid bash: {msg}", key="cluster.setup"))
    for stage in plan.stages.values():
        if stage.kind == "command":
            commands = list(dict.fromkeys(p["command"] for p in stage.payloads))
            # One `bash -n` for all sweep points (each wrapped in a function); one per command only
            # to find the culprit.
            if _bash_syntax_error("".join(f"__point{i}() {{\n{c}\n}}\n" for i, c in enumerate(commands))):
                msg = next(filter(None, map(_bash_syntax_error, commands)), "syntax error")
                errors.append(ConfigError(f"command is not valid bash: {msg}", stage=stage.name,
                                          key=f"pipeline.stages.{stage.name}.command"))
    return errors


def _bash_syntax_error(script: str) -> str:
    p = subprocess.run(["bash", "-n"], input=script + "\n", capture_output=True, text=True)
    return p.stderr.strip() if p.returncode != 0 else ""


def preflight(plan: Plan, run_root: Path, info: Optional[ClusterInfo],
              associations: Optional[Callable[[str], tuple]] = None) -> List[ConfigError]:
    """All problems found; empty means submit. `info` is None for the local backend."""
    errors = check_common(plan, run_root)
    for stage in plan.stages.values():
        errors += check_slurm_stage(stage, plan.cluster, info) if info else check_local_stage(stage, plan.cluster)
    if info and associations:
        wanted = {(s.name, k, s.resources[k] or plan.cluster.get(k)) for s in plan.stages.values()
                  for k in ("account", "qos")}
        if any(v for _, _, v in wanted):
            accounts, qos = associations(getpass.getuser())
            for stage, k, v in sorted(wanted, key=str):
                if v and v not in (accounts if k == "account" else qos):
                    have = accounts if k == "account" else qos
                    errors.append(ConfigError(f"{k} '{v}' is not available to {getpass.getuser()} "
                                              f"(yours: {', '.join(sorted(have)) or 'none'})",
                                              stage=stage, key=_key_for(plan, stage, k)))
    return errors


def _key_for(plan: Plan, stage: str, k: str) -> str:
    return f"pipeline.stages.{stage}.resources.{k}" if plan.stages[stage].resources[k] else f"cluster.{k}"
