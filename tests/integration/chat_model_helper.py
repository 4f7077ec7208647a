"""A tiny chat model made here, offline (jobs/demo/tiny_model.py: a random Llama with head_dim 64, the
shape vLLM's CPU attention serves, and a byte-level BPE tokenizer trained on standard-library sources,
with a chat template), and a broken one for the failure tests. Built with a stage environment's Python."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def make_chat_model(python: Path, out: Path) -> Path:
    if not (out / "config.json").exists():
        p = subprocess.run([str(python), "-m", "jobs.demo.tiny_model", str(out)], capture_output=True, text=True,
                           timeout=600, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert p.returncode == 0, p.stderr[-3000:]
    return out


def make_broken_model(out: Path) -> Path:
    """A folder that looks like a model and is not one: vLLM must fail to load it."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text('{"model_type": "llama", "hidden_size": "not a number", "architectures": '
                                     '["LlamaForCausalLM"]}\n')
    (out / "model.safetensors").write_bytes(b"\0" * 64)
    return out
