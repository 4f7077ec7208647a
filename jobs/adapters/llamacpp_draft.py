"""llama.cpp's server with a draft GGUF for speculative decoding (serve.speculative.method=draft on
serve.engine=llama.cpp). llama-cpp-python's server (0.3.36) builds its draft model in one place, as
`llama_speculative.LlamaPromptLookupDecoding(num_pred_tokens=N)` when its draft_model setting is
given, and its Llama then verifies the proposed tokens (logits for every position, rejecting from the
first mismatch). `install` replaces that constructor with GgufDraft, a second Llama on the draft GGUF
that proposes its N greedy tokens (the server's entry point, jobs/adapters/llamacpp_server.py, calls it
for `--draft <draft.gguf>`, with --draft_model prompt-lookup-decoding --draft_model_num_pred_tokens N).

Runs in the llamacpp environment (numpy, llama_cpp), imported there only."""
from __future__ import annotations

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


def install(draft: str, server_args: List[str]) -> None:
    """From now on the server's prompt-lookup draft model is a GgufDraft on `draft` (n_ctx and threads
    as the server's own arguments say)."""
    from llama_cpp import llama_speculative

    cls = draft_class()
    n_ctx, threads = int(_arg(server_args, "--n_ctx", "2048")), int(_arg(server_args, "--n_threads", "1"))
    llama_speculative.LlamaPromptLookupDecoding = lambda num_pred_tokens=10, **_: cls(draft, num_pred_tokens,
                                                                                       n_ctx, threads)
