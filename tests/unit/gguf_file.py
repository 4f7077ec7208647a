"""A minimal GGUF file written with the standard library (header, metadata, no tensors): what the
login-side reader (launcher/plan/vocab.py) and the llama.cpp engine's checks read. The real GGUF of the
local tests comes from llama.cpp's converter (tests/integration/gguf_helper.py)."""
import struct
from pathlib import Path


def _str(s: str) -> bytes:
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def write_gguf(path: Path, tokens, extra_first: bool = True) -> Path:
    """GGUF v3 with general.architecture, a u32 array and tokenizer.ggml.tokens = tokens."""
    kv = []
    if extra_first:
        kv.append(_str("general.architecture") + struct.pack("<I", 8) + _str("llama"))
        kv.append(_str("tokenizer.ggml.token_type") + struct.pack("<IIQ", 9, 5, len(tokens))
                  + b"".join(struct.pack("<i", 1) for _ in tokens))
    kv.append(_str("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, len(tokens)) + b"".join(_str(t) for t in tokens))
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, len(kv)) + b"".join(kv))
    return path
