"""How kind=serve drives Text Generation Inference (serve.engine=tgi): `text-generation-launcher` inside
TGI's container image (the task runs in the image through pyxis: launcher/slurm/containers.py), on a model
folder. Flags from `text-generation-launcher --help` (TGI 3.x): --model-id, --num-shard,
--max-total-tokens, --speculate (n-gram when the model has no Medusa heads). Its router has /health.
Standard library only."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

LABEL = "TGI"
HEALTH_PATH = "/health"
LAUNCHER = "text-generation-launcher"  # on the image's PATH


def server_command(python: str, s: Dict[str, Any], model: str, port: int, name: str, resources: Dict[str, Any],
                   tmp: Path) -> List[str]:
    """The launcher's argv: the model folder offline, num_shard = serve.tensor_parallel, the shards'
    sockets and torch.distributed's port kept apart from other jobs on the node (port + 1)."""
    argv = [LAUNCHER, "--model-id", model, "--hostname", "0.0.0.0", "--port", str(port),
            "--num-shard", str(int(s["tensor_parallel"])), "--master-port", str(port + 1),
            "--shard-uds-path", str(tmp / "tgi-server"), "--huggingface-hub-cache", str(tmp / "hub")]
    if s.get("max_model_len"):
        argv += ["--max-total-tokens", str(int(s["max_model_len"]))]
    if s.get("dtype") and s["dtype"] != "auto":
        argv += ["--dtype", str(s["dtype"])]
    spec = s.get("speculative") or {}
    if spec.get("method") == "ngram":
        argv += ["--speculate", str(int(spec["num_speculative_tokens"]))]
    return argv + [str(a) for a in s.get("args") or []]


def server_env(env: Dict[str, str], tmp: Path) -> Dict[str, str]:
    """env for the launcher: offline (the model is a mounted folder), no telemetry."""
    env.update({"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "TMPDIR": str(tmp)})
    return env
