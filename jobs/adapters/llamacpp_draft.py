"""llama.cpp's server with a draft GGUF for speculative decoding (serve.speculative.method=draft on
serve.engine=llama.cpp). llama-cpp-python's server (0.3.36) builds its draft model in one place, as
`llama_speculative.LlamaPromptLookupDecoding(num_pred_tokens=N)` when its draft_model setting is
given, and its Llama then verifies the proposed tokens (logits for every position, rejecting from the
first mismatch). This entry point replaces that constructor with GgufDraft, a second Llama on the
draft GGUF that proposes its N greedy tokens, and runs the server as `python -m llama_cpp.server`:

    python -m jobs.adapters.llamacpp_draft <draft.gguf> <llama_cpp.server arguments ...
        --draft_model prompt-lookup-decoding --draft_model_num_pred_tokens N>

Runs in the llamacpp environment (numpy, llama_cpp), imported there only."""
from __future__ import annotations

import runpy
import sys
from typing import Any, List


def _arg(argv: List[str], name: str, default: str) -> str:
    return argv[argv.index(name) + 1] if name in argv and argv.index(name) + 1 < len(argv) else default


def draft_class():
    """GgufDraft, a LlamaDraftModel (defined here: llama_cpp is imported inside the environment only)."""
    import numpy as np
    from llama_cpp import Llama
    from llama_cpp.llama_speculative import LlamaDraftModel

    class GgufDraft(LlamaDraftModel):
        """Proposes the draft model's `num_pred_tokens` greedy continuations of the sequence so far; its
        own KV cache keeps the longest common prefix between calls (Llama.generate's reset)."""

        def __init__(self, path: str, num_pred_tokens: int, n_ctx: int, n_threads: int):
            self.llama = Llama(model_path=path, n_ctx=n_ctx, n_threads=n_threads, n_threads_batch=n_threads,
                               verbose=False)
            self.num_pred_tokens = num_pred_tokens

        def __call__(self, input_ids, /, **kwargs: Any):
            room = self.llama.n_ctx() - len(input_ids)
            out: List[int] = []
            if room > 0:
                for token in self.llama.generate(input_ids.tolist(), top_k=1, temp=0.0, reset=True):
                    out.append(token)
                    if len(out) >= min(self.num_pred_tokens, room):
                        break
            return np.array(out, dtype=np.intc)

    return GgufDraft


def main(argv: List[str]) -> None:
    draft, server_args = argv[0], argv[1:]
    from llama_cpp import llama_speculative

    cls = draft_class()
    n_ctx, threads = int(_arg(server_args, "--n_ctx", "2048")), int(_arg(server_args, "--n_threads", "1"))
    llama_speculative.LlamaPromptLookupDecoding = lambda num_pred_tokens=10, **_: cls(draft, num_pred_tokens,
                                                                                       n_ctx, threads)
    sys.argv = ["llama_cpp.server", *server_args]
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
