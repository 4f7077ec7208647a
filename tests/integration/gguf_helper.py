"""A tiny GGUF made here, offline: the tiny chat model (jobs/demo/tiny_model.py, in the cpu environment)
converted by llama.cpp's own converter (<llamacpp env>/share/llama.cpp/convert_hf_to_gguf.py, f16).
The conversion and quantization are kind=quantize's own (jobs/adapters/gguf.py, with the tiny model's
pre-tokenizer named llama.cpp's "gpt-2": GPT-2's byte-level split); this fixture serves the serve tests."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from chat_model_helper import make_chat_model

ROOT = Path(__file__).resolve().parents[2]


def converter(llamacpp_python: Path) -> Path:
    return llamacpp_python.parent.parent / "share" / "llama.cpp" / "convert_hf_to_gguf.py"


def make_gguf(cpu_python: Path, llamacpp_python: Path, out_dir: Path, ftype: str = "") -> Path:
    """out_dir/chat.gguf (f16; and out_dir/hf, the model it came from), or with `ftype` (a llama.cpp
    LLAMA_FTYPE_ name such as MOSTLY_Q8_0) out_dir/chat-<ftype>.gguf quantized from it, both through
    kind=quantize's own adapter (jobs/adapters/gguf.py); nothing is redone when it exists."""
    gguf = out_dir / "chat.gguf"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    if not gguf.exists():
        model = make_chat_model(cpu_python, out_dir / "hf")
        p = subprocess.run([str(llamacpp_python), "-m", "jobs.adapters.gguf", "convert",
                            str(converter(llamacpp_python)), str(model), str(gguf), "f16", "gpt-2"],
                           capture_output=True, text=True, timeout=600, env=env)
        assert p.returncode == 0 and gguf.exists(), p.stdout[-2000:] + p.stderr[-3000:]
    if not ftype:
        return gguf
    quantized = out_dir / f"chat-{ftype.lower()}.gguf"
    if not quantized.exists():
        p = subprocess.run([str(llamacpp_python), "-m", "jobs.adapters.gguf", "quantize", str(gguf), str(quantized),
                            ftype, "1"], capture_output=True, text=True, timeout=600, env=env)
        assert p.returncode == 0 and quantized.exists(), p.stdout[-2000:] + p.stderr[-3000:]
    return quantized
