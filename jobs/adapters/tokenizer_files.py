"""A tokenizer.json as the trainers want it, with the standard library only (the login node checks
vocabulary sizes with it; the compute side turns the data stage's tokenizer.json into a Hugging Face
tokenizer folder that nanotron, lighteval, TRL and vLLM load with AutoTokenizer)."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

EOS = "<|endoftext|>"  # the data stage's end-of-document token (jobs/adapters/datatrove_blocks.py)


def tokenizer_json(path: str | Path) -> Path:
    """A tokenizer.json file, or a folder holding one."""
    path = Path(path)
    return path / "tokenizer.json" if path.is_dir() else path


def size(path: str | Path) -> int:
    """len(tokenizer): the ids of the vocabulary and of the added tokens."""
    tok = json.loads(tokenizer_json(path).read_text())
    return len(set(tok.get("model", {}).get("vocab", {}).values()) | {t["id"] for t in tok.get("added_tokens", [])})


def hf_folder(source: str | Path, dest: Path, eos: str = EOS) -> Path:
    """dest/ with tokenizer.json and tokenizer_config.json (PreTrainedTokenizerFast, eos = pad = eos),
    written to a temporary folder and renamed: a reader never sees half of it."""
    dest = Path(dest)
    if (dest / "tokenizer_config.json").exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    shutil.copyfile(tokenizer_json(source), tmp / "tokenizer.json")
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": eos, "bos_token": eos, "pad_token": eos,
              "unk_token": None, "model_max_length": 1_000_000, "clean_up_tokenization_spaces": False}
    (tmp / "tokenizer_config.json").write_text(json.dumps(config, indent=1) + "\n")
    try:
        os.rename(tmp, dest)
    except OSError:  # another node made it first
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
