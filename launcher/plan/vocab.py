"""A model's vocabulary as the login node can read it, without a stage library: a Hugging Face folder's
(tokenizer.json, else config.json's vocab_size) and a GGUF file's (its tokenizer.ggml.tokens array,
read with the standard library: the `gguf` package is in the llamacpp environment, not in the
launcher's). Speculative decoding needs a draft model whose tokens mean what the target's do."""
from __future__ import annotations

import hashlib
import json
import os
import struct
from typing import BinaryIO, Optional, Tuple

# GGUF value types (ggml's gguf.h): fixed sizes; 8 = string, 9 = array
_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def hf_vocab(folder: str) -> Optional[Tuple[int, str]]:
    """(size, fingerprint) of a Hugging Face folder's vocabulary: from tokenizer.json (the model's vocab
    and added tokens: the fingerprint hashes the token -> id pairs), else config.json's vocab_size (the
    fingerprint is then the size). None when neither is readable."""
    try:
        with open(os.path.join(folder, "tokenizer.json"), encoding="utf-8") as f:
            tok = json.load(f)
        vocab = dict(tok.get("model", {}).get("vocab") or {})
        vocab.update({a["content"]: a["id"] for a in tok.get("added_tokens") or []})
        if vocab:
            digest = hashlib.sha256(json.dumps(sorted(vocab.items(), key=lambda kv: kv[1])).encode()).hexdigest()
            return len(vocab), digest[:16]
    except (OSError, ValueError, AttributeError, TypeError, KeyError):
        pass
    try:
        with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
            size = json.load(f).get("vocab_size")
    except (OSError, ValueError):
        return None
    return (size, str(size)) if isinstance(size, int) else None


def _read(f: BinaryIO, fmt: str):
    n = struct.calcsize(fmt)
    data = f.read(n)
    if len(data) != n:
        raise ValueError("truncated GGUF header")
    return struct.unpack(fmt, data)[0]


def _skip(f: BinaryIO, vtype: int) -> None:
    if vtype == 8:
        f.seek(_read(f, "<Q"), os.SEEK_CUR)
    elif vtype == 9:
        etype, count = _read(f, "<I"), _read(f, "<Q")
        if etype in _SIZES:
            f.seek(_SIZES[etype] * count, os.SEEK_CUR)
        else:
            for _ in range(count):
                _skip(f, etype)
    elif vtype in _SIZES:
        f.seek(_SIZES[vtype], os.SEEK_CUR)
    else:
        raise ValueError(f"unknown GGUF value type {vtype}")


def gguf_vocab(path: str) -> Optional[Tuple[int, str]]:
    """(size, fingerprint) of a GGUF file's tokenizer.ggml.tokens (the fingerprint hashes the tokens in
    order), reading only the metadata at the file's start. None when the file is not GGUF (v2/v3) or
    has no token list; OSError when it cannot be opened."""
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF" or _read(f, "<I") not in (2, 3):
            return None
        _read(f, "<Q")  # tensor count
        for _ in range(_read(f, "<Q")):
            key = f.read(_read(f, "<Q")).decode("utf-8", "replace")
            vtype = _read(f, "<I")
            if key != "tokenizer.ggml.tokens":
                _skip(f, vtype)
                continue
            if vtype != 9 or _read(f, "<I") != 8:
                return None
            digest = hashlib.sha256()
            count = _read(f, "<Q")
            for _ in range(count):
                digest.update(f.read(_read(f, "<Q")) + b"\0")
            return count, digest.hexdigest()[:16]
    return None


def of(path: str) -> Optional[Tuple[int, str]]:
    """A model's vocabulary: a .gguf file's or a folder's (see above); None when unknown."""
    if os.path.isfile(path) and path.endswith(".gguf"):
        return gguf_vocab(path)
    return hf_vocab(path) if os.path.isdir(path) else None


def mismatch(target: str, draft: str) -> str:
    """Why `draft` cannot propose tokens for `target` ('' if it can or either is unreadable)."""
    try:
        a, b = of(target), of(draft)
    except (OSError, ValueError):
        return ""
    if a is None or b is None or a == b:
        return ""
    if a[0] != b[0]:
        return f"the draft model's vocabulary has {b[0]} tokens, the target's {a[0]} ({draft} vs {target})"
    if target.endswith(".gguf") != draft.endswith(".gguf"):
        return ""  # a GGUF's fingerprint hashes its token strings, a folder's its token -> id map: sizes only
    return f"the draft model's tokens differ from the target's (same size {a[0]}, other tokens: {draft} vs {target})"
