"""A tiny GGUF made here, offline: the tiny chat model (jobs/demo/tiny_model.py, in the cpu environment)
converted by llama.cpp's own converter (<llamacpp env>/share/llama.cpp/convert_hf_to_gguf.py, f16).
The converter refuses a BPE tokenizer whose pre-tokenizer hash it does not list (ours is trained here);
the tiny model's is GPT-2's byte-level split, so an unlisted one is written as llama.cpp's "gpt-2".
kind=quantize (method: gguf) makes the same file in a pipeline; this fixture serves the serve tests."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from chat_model_helper import make_chat_model

ROOT = Path(__file__).resolve().parents[2]
CONVERT = r"""
import runpy, sys
from pathlib import Path
conv, model, out = sys.argv[1:4]
sys.path.insert(0, str(Path(conv).parent))  # its conversion/ package
# its own gguf-py before the installed gguf (the converter's rule: its code is newer than PyPI's 0.19.0)
for gguf_py in (Path(conv).parent / "gguf-py", Path(sys.argv[4]) if len(sys.argv) > 4 else None):
    if gguf_py and gguf_py.is_dir():
        sys.path.insert(1, str(gguf_py))
        break
from conversion import base
listed = base.TextModel.get_vocab_base_pre
def pre(self, tokenizer):
    try:
        return listed(self, tokenizer)
    except NotImplementedError:
        return "gpt-2"
base.TextModel.get_vocab_base_pre = pre
sys.argv = [conv, model, "--outfile", out, "--outtype", "f16"]
runpy.run_path(conv, run_name="__main__")
"""


def converter(llamacpp_python: Path) -> Path:
    return llamacpp_python.parent.parent / "share" / "llama.cpp" / "convert_hf_to_gguf.py"


def make_gguf(cpu_python: Path, llamacpp_python: Path, out_dir: Path) -> Path:
    """out_dir/chat.gguf (and out_dir/hf, the model it came from); nothing is redone when it exists."""
    gguf = out_dir / "chat.gguf"
    if gguf.exists():
        return gguf
    model = make_chat_model(cpu_python, out_dir / "hf")
    # LLAMACPP_GGUF_PY: llama.cpp's gguf-py folder when the environment has none beside the converter
    extra = [os.environ["LLAMACPP_GGUF_PY"]] if os.environ.get("LLAMACPP_GGUF_PY") else []
    p = subprocess.run([str(llamacpp_python), "-c", CONVERT, str(converter(llamacpp_python)), str(model), str(gguf),
                        *extra],
                       capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert p.returncode == 0 and gguf.exists(), p.stdout[-2000:] + p.stderr[-3000:]
    return gguf
