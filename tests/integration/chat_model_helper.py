"""A tiny chat model made here, offline (a random Llama with head_dim 64, the shape vLLM's CPU attention
serves, and a byte-level BPE tokenizer trained on standard-library sources, with a chat template),
and a broken one for the failure tests. Built with the cpu stage environment's Python."""
from __future__ import annotations

import subprocess
from pathlib import Path

SCRIPT = r'''
import glob, os, sys
os.environ["HF_HUB_OFFLINE"] = "1"
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

out = sys.argv[1]
files = sorted(glob.glob(os.path.join(os.path.dirname(os.__file__), "*.py")))[:60]
tok = Tokenizer(models.BPE(unk_token=None))
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
tok.post_processor = processors.ByteLevel(trim_offsets=False)
tok.train_from_iterator((open(f, encoding="utf-8", errors="ignore").read() for f in files),
                        trainer=trainers.BpeTrainer(vocab_size=512, special_tokens=["<|endoftext|>"], show_progress=False,
                                                    initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                             model_max_length=512)
hf.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|endoftext|>\n{% endfor %}"
                    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
torch.manual_seed(0)
cfg = LlamaConfig(vocab_size=len(hf), hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                  num_key_value_heads=1, head_dim=64, max_position_embeddings=512, eos_token_id=hf.eos_token_id,
                  pad_token_id=hf.pad_token_id, bos_token_id=None, tie_word_embeddings=True)
LlamaForCausalLM(cfg).save_pretrained(out)
hf.save_pretrained(out)
'''


def make_chat_model(python: Path, out: Path) -> Path:
    if not (out / "config.json").exists():
        p = subprocess.run([str(python), "-c", SCRIPT, str(out)], capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-3000:]
    return out


def make_broken_model(out: Path) -> Path:
    """A folder that looks like a model and is not one: vLLM must fail to load it."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text('{"model_type": "llama", "hidden_size": "not a number", "architectures": '
                                     '["LlamaForCausalLM"]}\n')
    (out / "model.safetensors").write_bytes(b"\0" * 64)
    return out
