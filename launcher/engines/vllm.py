"""serve.engine=vllm (the default): vLLM's OpenAI-compatible server on a Hugging Face model folder, in
the `vllm` environment; speculative decoding through its --speculative-config (n-gram prompt lookup or
a draft model folder). Node side: jobs/adapters/vllm.py."""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Tuple

from jobs.layout import PLACEHOLDER

from launcher.plan import vocab
from launcher.engines import Engine


def hf_folder_problem(path: str) -> str:
    """Why a plain path is not a Hugging Face model folder ('' if it is)."""
    if not os.path.exists(path):
        return f"{path} does not exist"
    if not os.path.isfile(os.path.join(path, "config.json")):
        return f"{path} is not a Hugging Face model folder (no config.json)"
    return ""


def plain(path: Any) -> bool:
    """A path the login node can look at now (no placeholder, no URL)."""
    return isinstance(path, str) and bool(path) and not PLACEHOLDER.search(path) and "://" not in path


def model_length_problem(path: str, max_model_len) -> str:
    """vLLM refuses a max_model_len over the model's max_position_embeddings (config.json) unless told
    to allow it: '' if it fits or either is unknown."""
    try:
        with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
            limit = json.load(f).get("max_position_embeddings")
    except (OSError, ValueError):
        return ""
    if max_model_len is None or not isinstance(limit, int) or max_model_len <= limit:
        return ""
    return (f"{max_model_len} is over the model's max_position_embeddings ({limit}, {path}/config.json); vLLM would "
            f"refuse to start")


def draft_problems(s: Dict[str, Any], folder_problem) -> List[Tuple[str, str]]:
    """serve.speculative.draft_model, when a plain path: it exists as the engine needs it, and its
    vocabulary is the target's (launcher/plan/vocab.py)."""
    draft = (s.get("speculative") or {}).get("draft_model")
    if not plain(draft):
        return []
    problem = folder_problem(draft)
    if problem:
        return [("serve.speculative.draft_model", problem)]
    if plain(s["model"]) and (why := vocab.mismatch(s["model"], draft)):
        return [("serve.speculative.draft_model", why + ": speculative decoding needs the same tokenizer")]
    return []


class Vllm(Engine):
    name, label = "vllm", "vLLM"
    environment = "vllm"
    target = "vllm.entrypoints.openai.api_server:run_server"
    speculative_methods = ("ngram", "draft")

    def model_problem(self, path: str) -> str:
        return hf_folder_problem(path)

    def preflight(self, s: Dict[str, Any], env: Dict[str, Any]) -> List[Tuple[str, str]]:
        out = []
        if plain(s["model"]) and not hf_folder_problem(s["model"]):
            if problem := model_length_problem(s["model"], s["max_model_len"]):
                out.append(("serve.max_model_len", problem))
        return out + draft_problems(s, hf_folder_problem)

    def describe(self, s: Dict[str, Any]) -> str:
        return f"vLLM, tensor_parallel {s['tensor_parallel']}"


ENGINE = Vllm()
