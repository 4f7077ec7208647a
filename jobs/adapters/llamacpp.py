"""How kind=serve drives llama.cpp (serve.engine=llama.cpp): llama-cpp-python's OpenAI-compatible server,
`python -m llama_cpp.server` (through jobs/adapters/llamacpp_server.py: weight repacking off, a draft
GGUF), on one GGUF file. Its flags are the pydantic fields of
llama_cpp/server/settings.py (0.3.36), spelled --<field>. It has no /health route: GET /v1/models
answers once the model is loaded (the server loads it before it listens). Standard library only: the
server is a child process of the stage's interpreter (the llamacpp environment)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

LABEL = "llama.cpp"
HEALTH_PATH = "/v1/models"
DEFAULT_N_CTX = 2048  # llama_cpp.server's own default, said here so the log shows it
PROMPT_LOOKUP = "prompt-lookup-decoding"  # its draft_model value for n-gram lookup (LlamaPromptLookupDecoding)


def server_command(python: str, s: Dict[str, Any], model: str, port: int, name: str, resources: Dict[str, Any],
                   tmp: Path) -> List[str]:
    """The server's argv. Threads = the task's cpus_per_task (llama.cpp would take every core of the
    node); with GPUs every layer is offloaded (n_gpu_layers=-1), without none. Speculative ngram:
    prompt lookup with num_speculative_tokens predicted tokens; draft: the same, through
    jobs.adapters.llamacpp_draft (through llamacpp_server --draft), which makes the draft GGUF propose them. serve.args come last."""
    threads = str(max(1, int(resources.get("cpus_per_task") or 1)))
    gpus = int(resources.get("gpus_per_node") or 0)
    argv = [python, "-m", "jobs.adapters.llamacpp_server", "--model", model, "--model_alias", name, "--host", "0.0.0.0",
            "--port", str(port), "--n_ctx", str(s.get("max_model_len") or DEFAULT_N_CTX), "--n_threads", threads,
            "--n_threads_batch", threads, "--n_gpu_layers", "-1" if gpus else "0"]
    if s.get("chat_format"):
        argv += ["--chat_format", str(s["chat_format"])]
    spec = s.get("speculative") or {}
    if spec.get("method") in ("ngram", "draft"):
        argv += ["--draft_model", PROMPT_LOOKUP, "--draft_model_num_pred_tokens", str(int(spec["num_speculative_tokens"]))]
    if spec.get("method") == "draft":  # the same server, its draft model a second GGUF (llamacpp_draft.py)
        argv[3:3] = ["--draft", str(spec["draft_model"])]
    return argv + [str(a) for a in s.get("args") or []]


def server_env(env: Dict[str, str], tmp: Path) -> Dict[str, str]:
    """env for the server: offline, TMPDIR = tmp (the task's own folder, removed afterwards)."""
    env.update({"HF_HUB_OFFLINE": "1", "TMPDIR": str(tmp)})
    return env
