"""serve.engine=llama.cpp: llama-cpp-python's OpenAI-compatible server (`python -m llama_cpp.server`) on
a GGUF file, in the `llamacpp` environment; on CPU its threads are the task's cpus_per_task. Speculative
decoding: n-gram prompt lookup (llama_cpp.server's draft_model=prompt-lookup-decoding) or a draft GGUF
with the target's vocabulary (jobs/adapters/llamacpp_draft.py). Node side: jobs/adapters/llamacpp.py."""
from __future__ import annotations

import os
from typing import Any, Dict, List, Tuple

from launcher.engines import Engine
from launcher.engines.vllm import draft_problems, plain
from launcher.kinds.base import Problems


def gguf_problem(path: str) -> str:
    """Why a plain path is not a GGUF file ('' if it is)."""
    if not os.path.exists(path):
        return f"{path} does not exist"
    if not os.path.isfile(path):
        return f"{path} is not a file: llama.cpp serves one .gguf file"
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            return f"{path} is not a GGUF file (no GGUF magic at its start)"
    return ""


class LlamaCpp(Engine):
    name, label = "llama.cpp", "llama.cpp (llama-cpp-python's server)"
    environment = "llamacpp"
    target = "llama_cpp.server.app:create_app"
    speculative_methods = ("ngram", "draft")
    own_keys = ("chat_format",)

    def check(self, p: Problems, s: Dict[str, Any], r: Dict[str, Any]) -> None:
        model = s["model"]
        if isinstance(model, str) and not model.endswith(".gguf"):
            p.add("serve.model", f"engine llama.cpp serves a GGUF file (a path or {{input:<stage>}}/... ending in "
                                 f".gguf), got {model!r}; a Hugging Face folder is served by engine vllm or tgi, "
                                 f"or made a GGUF by kind=quantize")
        if s["tensor_parallel"] != 1:
            p.add("serve.tensor_parallel", f"engine llama.cpp runs one process (tensor_parallel=1), got "
                                           f"{s['tensor_parallel']}")
        if s["dtype"] != "auto":
            p.add("serve.dtype", f"engine llama.cpp serves the GGUF's own types (dtype=auto), got {s['dtype']!r}")

    def model_problem(self, path: str) -> str:
        return gguf_problem(path)

    def preflight(self, s: Dict[str, Any], env: Dict[str, Any]) -> List[Tuple[str, str]]:
        draft = (s.get("speculative") or {}).get("draft_model")
        if plain(draft) and not str(draft).endswith(".gguf"):
            return [("serve.speculative.draft_model", f"engine llama.cpp drafts with a GGUF file, got {draft}")]
        return draft_problems(s, gguf_problem)

    def describe(self, s: Dict[str, Any]) -> str:
        ctx = s["max_model_len"] or 2048
        return f"llama.cpp on the GGUF, context {ctx}, chat format {s['chat_format'] or 'from the GGUF'}"


ENGINE = LlamaCpp()
