"""What cluster=local cannot run in a stage's request: this machine is one node with the GPUs its
profile says it has (cluster.gpus_per_node). The local backend's check_stage (backend.py;
launcher/plan/preflight.py calls it through the Backend protocol). The stage is a
launcher.backends.StageRequest (this layer is below launcher.plan); each error names the stage and
its key (pipeline.stages.<name>.resources.<key>)."""
from __future__ import annotations

from typing import List

from launcher.backends import StageRequest
from launcher.errors import ConfigError


def check_stage(stage: StageRequest, cluster: dict) -> List[ConfigError]:
    """More than one node, or more GPUs per node than cluster.gpus_per_node."""
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


def _key(stage: StageRequest, k: str) -> str:
    return f"pipeline.stages.{stage.name}.resources.{k}"
