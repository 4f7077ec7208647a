"""A tiny chat model made here, offline, that vLLM loads on CPU: a random Llama (head_dim 64, the
shape vLLM's CPU attention serves; 2 layers, hidden 128, ~0.5 M parameters) and a byte-level BPE
tokenizer (512 tokens) trained on the Python standard library's own sources, with a chat template.
Its completions are noise: it exists so that serving and batch generation run end to end without a
download. Deterministic (seed 0).

    <python with torch, transformers, tokenizers> -m jobs.demo.tiny_model OUT_DIR [--hidden N]

(the `vllm` and `cpu` stage environments both have them: .envs/vllm/bin/python -m jobs.demo.tiny_model
data/tiny-chat-model). Nothing is written when OUT_DIR/config.json exists. --hidden 256 (heads of 64,
MLP 2 x hidden) gives rows of 256 values, the block of llama.cpp's k-quants (q4_k_m...): at 128 every
tensor would fall back to another type (tests/integration/test_quantize.py)."""
from __future__ import annotations

import glob
import os
import sys

CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|endoftext|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")


def make(out: str, hidden: int = 128) -> str:
    """Write the model and tokenizer to `out` (a Hugging Face folder); returns `out`. hidden: a multiple of 64."""
    if os.path.exists(os.path.join(out, "config.json")):
        return out
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    files = sorted(glob.glob(os.path.join(os.path.dirname(os.__file__), "*.py")))[:60]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.train_from_iterator((open(f, encoding="utf-8", errors="ignore").read() for f in files),
                            trainer=trainers.BpeTrainer(vocab_size=512, special_tokens=["<|endoftext|>"],
                                                        show_progress=False,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                 model_max_length=512)
    hf.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(hf), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                      num_attention_heads=hidden // 64, num_key_value_heads=1, head_dim=64, max_position_embeddings=512,
                      eos_token_id=hf.eos_token_id, pad_token_id=hf.pad_token_id, bos_token_id=None,
                      tie_word_embeddings=True)
    LlamaForCausalLM(cfg).save_pretrained(out)
    hf.save_pretrained(out)
    return out


if __name__ == "__main__":
    if len(sys.argv) not in (2, 4) or len(sys.argv) == 4 and sys.argv[2] != "--hidden":
        sys.exit("usage: python -m jobs.demo.tiny_model OUT_DIR [--hidden N]")
    print(make(sys.argv[1], int(sys.argv[3]) if len(sys.argv) == 4 else 128))
