"""The entry point of serve.engine=llama.cpp: llama-cpp-python's OpenAI-compatible server
(`python -m llama_cpp.server`) with llama.cpp's weight repacking off (jobs/adapters/llamacpp_repack.py:
it segfaults on quantized GGUFs on the dev machine's Xeon) and, with `--draft <draft.gguf>` first, a
draft GGUF for speculative decoding (jobs/adapters/llamacpp_draft.py):

    python -m jobs.adapters.llamacpp_server [--draft <draft.gguf>] <llama_cpp.server arguments ...>

Runs in the llamacpp environment (llama_cpp), imported there only."""
from __future__ import annotations

import runpy
import sys
from typing import List


def main(argv: List[str]) -> None:
    from jobs.adapters import llamacpp_draft, llamacpp_repack

    draft = None
    if argv[:1] == ["--draft"]:
        draft, argv = argv[1], argv[2:]
    llamacpp_repack.disable()
    if draft:
        llamacpp_draft.install(draft, argv)
    sys.argv = ["llama_cpp.server", *argv]
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
