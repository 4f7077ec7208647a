"""Shared bits of the llama.cpp serving benchmarks: the tiny GGUF (tests/integration/gguf_helper.py),
a server started by hand with the launcher's own command line (jobs/adapters/llamacpp.py), and a
client that sends the same prompts one after the other and counts generated tokens."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from common import ROOT

sys.path.insert(0, str(ROOT / "tests" / "integration"))
sys.path.insert(0, str(ROOT))

from gguf_helper import make_gguf  # noqa: E402

from jobs.adapters import llamacpp  # noqa: E402
from jobs.runtime import http  # noqa: E402

LLAMACPP_PYTHON = ROOT / ".envs" / "llamacpp" / "bin" / "python"
CPU_PYTHON = ROOT / ".envs" / "cpu" / "bin" / "python"
# prompts whose answers may repeat their own text (what prompt lookup can reuse)
PROMPTS = ["def read_lines(path):\n    with open(path) as f:\n        return f.read().splitlines()\n\ndef read_lines(",
           "Complete the sentence: Return the number of items in the list. Return the number of",
           "import os\nimport sys\nimport json\nimport os\nimport sys\n",
           "The socket must be bound to an address. The socket must be bound to"]


def gguf(work: Path) -> Path:
    return make_gguf(CPU_PYTHON, LLAMACPP_PYTHON, work / "model")


def start_by_hand(model: Path, port: int, threads: int, speculative: dict | None = None, ctx: int = 512):
    """`python -m llama_cpp.server` as the launcher would start it (same argv builder), in a session of
    its own; returns (process, base URL) once /v1/models answers."""
    s = {"max_model_len": ctx, "chat_format": None, "args": [], "speculative": speculative or {}}
    argv = llamacpp.server_command(str(LLAMACPP_PYTHON), s, str(model), port, "bench", {"cpus_per_task": threads},
                                   Path("/tmp"))
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        if http.get_json(base + llamacpp.HEALTH_PATH, timeout=2)[0] == 200:
            return proc, base + "/v1"
        time.sleep(0.5)
    stop(proc)
    raise SystemExit("the server started by hand did not answer within 150 s")


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's session, SIGKILL after 10 s."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def measure(base: str, model: str, requests: int, max_tokens: int) -> dict:
    """Completions of PROMPTS in turn (greedy), one at a time after one warm-up: generated tokens/s."""
    http.post_json(base + "/completions", {"model": model, "prompt": PROMPTS[0], "max_tokens": 4, "temperature": 0},
                   timeout=120)
    tokens, t0 = 0, time.perf_counter()
    for i in range(requests):
        status, body = http.post_json(base + "/completions", {"model": model, "prompt": PROMPTS[i % len(PROMPTS)],
                                                              "max_tokens": max_tokens, "temperature": 0}, timeout=300)
        if status != 200:
            raise SystemExit(f"request {i}: HTTP {status}: {str(body)[:300]}")
        tokens += body["usage"]["completion_tokens"]
    seconds = time.perf_counter() - t0
    return {"requests": requests, "tokens": tokens, "seconds": round(seconds, 2), "tokens_per_s": round(tokens / seconds, 1)}
