"""Bits per byte of a causal LM on documents, computed the same way for a transformers model and for a
GGUF model run by llama.cpp, so that the two numbers differ only by what quantization changed.

    bits per byte = -sum over every token of ln p(token | what precedes it) / ln 2 / UTF-8 bytes

the quantity lighteval's `bits_per_byte` (the evaluate stage's clean_bpb task) reports. Both sides score
the same token ids: the Hugging Face tokenizer's (no special tokens). A document longer than the
window is cut into windows of `window` tokens; each window is scored after one document-start token
(the tokenizer's BOS, else its EOS), so every token of the document is predicted exactly once and the
bytes are the document's own. Tokenizer agreement (does llama.cpp's tokenizer from the GGUF file give
the same ids?) is reported beside, as the share of documents whose ids are equal.

Standard library at import; torch, transformers, numpy and llama_cpp where used."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence

LN2 = math.log(2)


def documents(path: str | Path, n: int) -> List[str]:
    """The first n rows' "text" of a perplexity jsonl (jobs/adapters/eval_tasks.py row format)."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                out.append(json.loads(line)["text"])
            if len(out) >= n:
                break
    return out


def demo_documents(folder: Path, n: int) -> tuple[str, List[str]]:
    """(path, texts) of the demo's held-out clean text (the evaluate stage's clean_bpb rows)."""
    from jobs.adapters import eval_tasks

    specs = eval_tasks.write_tasks(folder)
    return specs["clean_bpb"]["path"], documents(specs["clean_bpb"]["path"], n)


def encode(tokenizer, texts: Sequence[str]) -> tuple[int, List[List[int]]]:
    """(document-start token, ids of each text) with a transformers tokenizer."""
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if start is None:
        raise ValueError("the tokenizer has neither a BOS nor an EOS token to start a document with")
    return start, [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def windows(ids: Sequence[int], window: int) -> List[List[int]]:
    return [list(ids[i:i + window]) for i in range(0, len(ids), window)] or []


def total(score: Callable[[List[int]], float], start: int, docs: List[List[int]], texts: Sequence[str],
          window: int, should_stop: Callable[[], bool] = lambda: False) -> Dict[str, Any]:
    """Sum of -ln p over every token (score(context + targets) gives it for one window), in bits per
    byte, with the token and byte counts and the seconds it took."""
    t0, nll, tokens = time.time(), 0.0, 0
    for ids in docs:
        for w in windows(ids, window):
            if should_stop():
                raise InterruptedError("stop requested")
            nll += score([start] + w)
            tokens += len(w)
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    return {"bits_per_byte": nll / LN2 / n_bytes, "tokens": tokens, "bytes": n_bytes, "documents": len(docs),
            "seconds": round(time.time() - t0, 2)}


def nll_of(logits, ids: List[int]) -> float:
    """-sum ln p(ids[i+1] | ids[..i]) from logits (numpy, one row per position)."""
    import numpy as np

    x = np.asarray(logits[:len(ids) - 1], dtype=np.float64)
    m = x.max(axis=1, keepdims=True)
    lse = (m[:, 0] + np.log(np.exp(x - m).sum(axis=1)))
    return float((lse - x[np.arange(len(ids) - 1), ids[1:]]).sum())


def hf_scorer(model) -> Callable[[List[int]], float]:
    """score(ids) of a transformers causal LM (on its device)."""
    import torch

    device = next(model.parameters()).device

    def score(ids: List[int]) -> float:
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids], device=device)).logits[0].float()
            return float(torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(ids[1:], device=device),
                                                           reduction="sum"))

    return score


def llama_scorer(llm) -> Callable[[List[int]], float]:
    """score(ids) of a llama_cpp.Llama made with logits_all=True (its scores: one row per position)."""
    def score(ids: List[int]) -> float:
        llm.reset()
        llm.eval(ids)
        return nll_of(llm.scores[:len(ids)], ids)

    return score


def window_of(max_positions: int | None, cap: int = 512) -> int:
    """Tokens scored per window: the model's context less the start token, at most `cap`."""
    return max(1, min(cap, (max_positions or cap)) - 1)
