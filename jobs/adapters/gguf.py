"""llama.cpp's GGUF tools, driven from a quantize task (jobs/kinds/quantize.py), each in a child process
of the stage's interpreter (the llamacpp environment) so that the stop signal reaches it and a crash
in C++ fails the step, not the task:

    python -m jobs.adapters.gguf convert CONVERTER HF_DIR OUTFILE OUTTYPE PRE_TOKENIZER
        llama.cpp's convert_hf_to_gguf.py (the environment build copies it, with its conversion/
        package, from llama-cpp-python's source distribution to <env>/share/llama.cpp/), run in this
        process with one change: when it does not recognise a BPE tokenizer's pre-tokenizer (it knows
        tokenizers by the sha256 of their ids on a fixed text; a locally trained BPE is in no list),
        it writes PRE_TOKENIZER as tokenizer.ggml.pre instead of refusing, "auto" meaning the
        llama.cpp pre-tokenizer whose regex is the tokenizer's own (pre_tokenizer_for). This is what
        llama.cpp's docs ask for (convert_hf_to_gguf_update.py registers a hash -> name), without
        editing its sources.
    python -m jobs.adapters.gguf quantize SRC DST FTYPE THREADS
        llama.cpp's quantizer through llama-cpp-python's binding, llama_cpp.llama_model_quantize (the
        library the environment compiled: no llama-quantize binary is needed). FTYPE is a LLAMA_FTYPE_*
        name without the prefix (MOSTLY_Q4_K_M). Tensors whose rows do not split into the type's blocks
        (k-quants: 256 values) fall back to a compatible type; the count is in the log.

Standard library at import."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

CONVERTER = Path("share") / "llama.cpp" / "convert_hf_to_gguf.py"


def converter(python: str = sys.executable) -> Path:
    """Where the environment build put llama.cpp's converter: <prefix of python's venv>/share/llama.cpp/."""
    return Path(os.path.realpath(os.path.join(os.path.dirname(python), ".."))) / CONVERTER


def pre_tokenizer_for(tokenizer_json: Dict[str, Any]) -> Optional[str]:
    """The llama.cpp pre-tokenizer (tokenizer.ggml.pre) that splits text as this tokenizers' pre_tokenizer
    does, or None. ByteLevel with its GPT-2 regex is llama.cpp's "gpt-2"; single digits first, then
    ByteLevel (jobs/adapters/datatrove_blocks.py TrainTokenizer) is "refact" (the same two regexes,
    llama-vocab.cpp LLAMA_VOCAB_PRE_TYPE_REFACT)."""
    pre = tokenizer_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers") if pre.get("type") == "Sequence" else [pre]

    def byte_level(s: Dict[str, Any]) -> bool:
        return s.get("type") == "ByteLevel" and s.get("use_regex", True) and not s.get("add_prefix_space", False)

    if len(steps) == 1 and byte_level(steps[0]):
        return "gpt-2"
    if len(steps) == 2 and steps[0].get("type") == "Digits" and steps[0].get("individual_digits") \
            and byte_level(steps[1]):
        return "refact"
    return None


def open_model(path: Path, n_ctx: int, threads: int, repack: bool = False):
    """llama_cpp.Llama on a GGUF file with every position's logits (logits_all), for scoring; llama.cpp's
    weight repacking off unless `repack` (jobs/adapters/llamacpp_repack.py: it segfaults on quantized
    types on the dev machine's Xeon)."""
    import llama_cpp

    from jobs.adapters import llamacpp_repack

    undo = llamacpp_repack.disable(repack)
    try:
        return llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, logits_all=True,
                               n_threads=threads, verbose=False)
    finally:
        undo()


def convert_argv(python: str, conv: Path, model: str, outfile: Path, outtype: str, pre: str) -> List[str]:
    return [python, "-m", "jobs.adapters.gguf", "convert", str(conv), model, str(outfile), outtype, pre]


def quantize_argv(python: str, src: Path, dst: Path, ftype: str, threads: int) -> List[str]:
    return [python, "-m", "jobs.adapters.gguf", "quantize", str(src), str(dst), ftype, str(threads)]


def _convert(conv: str, model: str, outfile: str, outtype: str, pre: str) -> None:
    import logging
    import runpy

    here = Path(conv).parent
    sys.path.insert(0, str(here))  # its conversion/ package
    if "NO_LOCAL_GGUF" not in os.environ:  # the converter's own rule: its gguf-py before the installed gguf
        sys.path.insert(1, str(here / "gguf-py"))
    from conversion import base

    log = logging.getLogger("jobs.adapters.gguf")
    recognised = base.TextModel.get_vocab_base_pre

    def get_vocab_base_pre(self, tokenizer) -> str:
        try:
            return recognised(self, tokenizer)
        except NotImplementedError:
            name = pre
            if pre == "auto":
                path = Path(model) / "tokenizer.json"
                name = pre_tokenizer_for(json.loads(path.read_text())) if path.is_file() else None
            if not name:
                raise NotImplementedError(
                    "quantize.pre_tokenizer: the converter does not recognise this BPE tokenizer and its "
                    "pre_tokenizer matches none llama.cpp has under a known name: set quantize.pre_tokenizer "
                    "to the llama.cpp name whose regex splits text as yours does (docs/quantize.md)") from None
            log.warning("tokenizer not in llama.cpp's list: tokenizer.ggml.pre = %r (quantize.pre_tokenizer=%s)",
                        name, pre)
            return name

    base.TextModel.get_vocab_base_pre = get_vocab_base_pre
    sys.argv = [conv, model, "--outfile", outfile, "--outtype", outtype]
    runpy.run_path(conv, run_name="__main__")


def _quantize(src: str, dst: str, ftype: str, threads: int) -> None:
    import ctypes

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_{ftype}")
    params.nthread = threads
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params))
    if rc != 0:
        raise SystemExit(f"llama_model_quantize({src} -> {dst}, LLAMA_FTYPE_{ftype}) returned {rc}; its log is above")


if __name__ == "__main__":
    what, args = sys.argv[1], sys.argv[2:]
    if what == "convert":
        _convert(*args)
    elif what == "quantize":
        _quantize(args[0], args[1], args[2], int(args[3]))
    else:
        sys.exit(f"usage: python -m jobs.adapters.gguf convert|quantize ... (got {what!r})")
