"""The stage-interpreter side of scripts/gpu-check (benchmarks/gpu_check.py runs it with the interpreter the
stages get: the GPU machine's python3, or the cpu stage environment in --cpu mode). Two commands:

  python gpu_check_helper.py prepare OUT SIZES.json   a corpus made here (tests/integration/hf_train_helper.py,
        as the hf tests make theirs) -> byte-level BPE tokenizer -> datatrove DocumentTokenizer folder; SFT chat data whose every example is longer than align.max_length (so each batch is
        exactly micro_batch x max_length tokens, no padding); a freshly initialised Llama model folder
        with that tokenizer for the SFT stage. Writes OUT/prepared.json; prints it with `versions` added.
  python gpu_check_helper.py direct SIZES.json KIND   KIND hf | sft: the baseline, the same model and
        batch trained by calling transformers and torch directly (a plain loop: forward, backward, clip,
        AdamW), bf16 on the GPU as the stage does it; prints {"tokens_per_s": ...} as its last line.
  python gpu_check_helper.py versions                 the libraries this interpreter has, and its GPU.

hf: float32 weights under torch.autocast(bfloat16), as transformers' Trainer does with bf16=True (the
hf backend's TrainingArguments). sft: bfloat16 weights (jobs/adapters/trl.py loads the model with
dtype=bfloat16) under the same autocast. In --cpu mode (SIZES["cuda"] false) float32 throughout.
"""
from __future__ import annotations

import json
import os
import random
import sys
import time
from contextlib import nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "integration"))


def prepare(out: Path, sizes: dict) -> dict:
    """Tokenizer, tokenized folder, SFT data and SFT model under `out` (see the module docstring)."""
    import hf_train_helper as h
    from transformers import LlamaForCausalLM

    from jobs.adapters.datatrove_blocks import TrainTokenizer
    from jobs.adapters.trainer import llama_config, load_tokenizer

    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    docs = h.make_docs("a", sizes["docs"], 1) + h.make_docs("b", sizes["docs"] // 2, 2)
    tok = TrainTokenizer(str(out / "tokenizer"), vocab_size=sizes["tokenizer_vocab"], min_frequency=2)._train(docs)
    (out / "tokenizer").mkdir()
    tok_file = out / "tokenizer" / "tokenizer.json"
    tok.save(str(tok_file))
    folder = tokenize(docs, tok_file, out / "tokens")
    tokens = sum(f.stat().st_size for f in folder.glob("*.ds")) // 2
    sft_data = out / "sft.jsonl"
    examples = write_sft(sft_data, docs, sizes, tok)
    tokenizer = load_tokenizer(str(tok_file), model_max_length=int(sizes["model"]["max_position_embeddings"]))
    vocab = int(sizes["model"]["vocab_size"] or len(tokenizer))
    model = LlamaForCausalLM(llama_config(sizes["model"], vocab, tokenizer.eos_token_id))
    model.save_pretrained(str(out / "sft-model"))
    tokenizer.save_pretrained(str(out / "sft-model"))
    info = {"tokenizer": str(tok_file), "data": str(folder), "tokens": tokens, "vocab": vocab,
            "tokenizer_size": len(tokenizer), "sft_data": str(sft_data), "sft_examples": examples,
            "sft_model": str(out / "sft-model"), "seconds": round(time.time() - t0, 2)}
    (out / "prepared.json").write_text(json.dumps(info, indent=1))
    return info


def tokenize(docs: list[str], tok_file: Path, out: Path) -> Path:
    """datatrove's DocumentTokenizer over the documents, handed to the executor as a list: the JSONL
    reader of tests/integration/hf_train_helper.py needs orjson, which the GPU image lacks (seen when
    the script ran against a copy of that image's package list)."""
    from datatrove.data import Document
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.tokens import DocumentTokenizer

    from jobs.adapters.trainer import EOS

    LocalPipelineExecutor(
        pipeline=[[Document(text=t, id=str(i)) for i, t in enumerate(docs)],
                  DocumentTokenizer(str(out), tokenizer_name_or_path=str(tok_file), eos_token=EOS, seed=0)],
        tasks=1, workers=1, logging_dir=str(out.parent / "logs-tokens"), skip_completed=False).run()
    return out


def write_sft(path: Path, docs: list[str], sizes: dict, tok) -> int:
    """SFT jsonl ({"messages": [user, assistant]}): each example's assistant text is joined from documents
    until the whole chat is over align.max_length tokens, so truncation makes every row that long."""
    rng = random.Random(0)
    n, need = sizes["sft_examples"], int(sizes["sft_max_length"]) + 16
    with open(path, "w") as f:
        for i in range(n):
            parts, length = [], 0
            while length < need:
                doc = rng.choice(docs)
                parts.append(doc)
                length += len(tok.encode(doc).ids)
            text = " ".join(parts)
            user = {"role": "user", "content": "Continue the story: " + " ".join(text.split()[:6])}
            f.write(json.dumps({"messages": [user, {"role": "assistant", "content": text}]}) + "\n")
    return n


def direct(sizes: dict, kind: str) -> dict:
    """Tokens/s of `steps` timed optimizer steps (after `warmup` untimed ones) of the plain loop."""
    import torch
    from transformers import LlamaForCausalLM

    from jobs.adapters.trainer import llama_config

    prepared = json.loads((Path(sizes["work"]) / "data" / "prepared.json").read_text())
    cuda = bool(sizes["cuda"]) and torch.cuda.is_available()
    if sizes["cuda"] and not cuda:
        raise SystemExit("direct: no CUDA device visible to torch")
    run = sizes[kind]
    micro, seq = int(run["micro_batch"]), int(run["seq_len"])
    if not cuda and os.environ.get("SLURM_CPUS_PER_TASK"):  # as jobs/adapters/trainer.py train() does
        torch.set_num_threads(max(1, int(os.environ["SLURM_CPUS_PER_TASK"])))
    torch.manual_seed(0)
    device = torch.device("cuda" if cuda else "cpu")
    model = LlamaForCausalLM(llama_config(sizes["model"], prepared["vocab"], 0))
    if cuda and kind == "sft":
        model = model.to(torch.bfloat16)  # as TRL's worker loads it (dtype=bfloat16)
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0, fused=cuda)
    ids = torch.randint(0, prepared["tokenizer_size"], (micro, seq), device=device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else nullcontext()

    def step():
        with autocast:
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    for _ in range(int(run["warmup"])):
        step()
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(int(run["direct_steps"])):
        loss = step()
    float(loss)  # waits for the last step
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    tokens = int(run["direct_steps"]) * micro * seq
    return {"kind": kind, "tokens_per_s": round(tokens / seconds, 1), "seconds": round(seconds, 3),
            "tokens": tokens, "params": sum(p.numel() for p in model.parameters()),
            "device": torch.cuda.get_device_name(0) if cuda else "cpu",
            "dtype": str(next(model.parameters()).dtype), "autocast_bf16": cuda}


def versions() -> dict:
    """What this interpreter has: the libraries the checks use (version, or why it does not import)
    and the GPU torch sees."""
    import importlib
    import importlib.metadata

    out = {"python": sys.version.split()[0], "executable": sys.executable}
    for name in ("torch", "transformers", "accelerate", "peft", "trl", "datasets", "datatrove", "pyarrow",
                 "huggingface_hub"):
        try:
            module = importlib.import_module(name)
            try:
                out[name] = importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                out[name] = getattr(module, "__version__", "?")
        except Exception as e:  # noqa: BLE001 - reported, not raised: the table says what is missing
            out[name] = f"missing ({type(e).__name__}: {str(e)[:120]})"
    try:
        import torch

        out["cuda"] = torch.cuda.is_available()
        out["gpu"] = torch.cuda.get_device_name(0) if out["cuda"] else None
        out["torch_cuda"] = torch.version.cuda
    except Exception:  # noqa: BLE001
        out["cuda"] = False
    return out


def quant_model(prepared: dict, sizes: dict, out: Path) -> dict:
    """A ~0.5B Llama made from a config (no download), random weights in bfloat16, with the prepared
    tokenizer: the model kind=quantize method=bnb quantizes (benchmarks/gpu_check.py check_quantize)."""
    import torch
    from transformers import LlamaForCausalLM

    from jobs.adapters.trainer import llama_config, load_tokenizer

    m = sizes["quantize"]["model"]
    tokenizer = load_tokenizer(prepared["tokenizer"], model_max_length=int(m["max_position_embeddings"]))
    with torch.device("cuda" if sizes["cuda"] else "cpu"):
        model = LlamaForCausalLM(llama_config(m, int(m["vocab_size"]), tokenizer.eos_token_id)).to(torch.bfloat16)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return {"model": str(out), "params": sum(p.numel() for p in model.parameters())}


def main(argv: list[str]) -> int:
    if argv and argv[0] == "versions":
        print(json.dumps(versions()))
        return 0
    if argv and argv[0] == "prepare":
        found = versions()  # first: a missing library is named even when preparing fails on it
        print(f"versions: {json.dumps(found)}", file=sys.stderr, flush=True)
        print(json.dumps({**prepare(Path(argv[1]), json.loads(Path(argv[2]).read_text())), "versions": found}))
        return 0
    if argv and argv[0] == "quant-model":
        prepared, sizes = (json.loads(Path(a).read_text()) for a in argv[1:3])
        print(json.dumps(quant_model(prepared, sizes, Path(argv[3]))))
        return 0
    if argv and argv[0] == "direct":
        print(json.dumps(direct(json.loads(Path(argv[1]).read_text()), argv[2])))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
