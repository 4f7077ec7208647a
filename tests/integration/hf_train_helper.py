"""Runs in the cpu stage environment for tests/integration/test_train_hf.py (the launcher's venv has no
torch). Two commands:

  python hf_train_helper.py data OUT         tiny corpus -> byte-level BPE tokenizer -> datatrove
                                             DocumentTokenizer folders; writes OUT/data.json
  python hf_train_helper.py run JOBS RESULT  runs the jobs of JOBS (a JSON list) in this one process,
                                             writes {name: result} to RESULT

Job kinds: train (jobs.adapters.trainer.train with a TaskContext; `stop_at` sets the stop flag once that step
ended, as the signal handler would; `tracking_spec`: a stage spec whose tracking the run logs to), compare (max |difference| of two model folders' weights), load
(AutoModelForCausalLM/AutoTokenizer on a folder, a few greedy tokens), mix (the sample mixture).
"""
from __future__ import annotations

import json
import random
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

EOS = "<|endoftext|>"


def tiny_train(steps: int, every: int, seq_len: int, micro_batch: int, grad_accum: int = 1, max_positions: int = 64,
               log_every: int = 5) -> dict:
    """A `train` config (launcher/config/schema.py Train, resolved) for a 2-layer, hidden-32 Llama: tests only."""
    per_step = seq_len * micro_batch * grad_accum
    return {
        "backend": "hf",
        "model": {"name": "test", "hidden_size": 32, "intermediate_size": 64, "num_layers": 2, "num_heads": 4,
                  "num_kv_heads": 2, "vocab_size": None, "max_position_embeddings": max_positions,
                  "rope_theta": 10000.0, "rms_norm_eps": 1e-5, "tie_embeddings": True, "init_std": 0.02,
                  "num_experts": 0, "experts_top_k": 2, "moe_intermediate_size": None},
        "tokens": steps * per_step, "seq_len": seq_len, "micro_batch": micro_batch, "grad_accum": grad_accum,
        "checkpoint_every_tokens": every * per_step, "seed": 1, "data": {}, "tokenizer": "", "dtype": "bfloat16",
        "optimizer": {"lr": 3e-3, "min_lr": 3e-4, "schedule": "cosine", "warmup_steps": 4, "decay_fraction": 0.2,
                      "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "clip_grad": 1.0,
                      "zero_stage": 0},
        "parallelism": {}, "log_every_steps": log_every,
    }

TOPICS = {
    "a": ("river mountain forest valley stone bridge village harbour meadow lantern orchard castle garden tower "
          "cloud winter summer evening morning traveller shepherd miller baker").split(),
    "b": ("engine circuit signal network protocol server packet buffer kernel thread socket compiler register "
          "cache memory vector matrix tensor gradient optimizer scheduler").split(),
}
VERBS = "sees builds crosses follows keeps finds carries watches opens closes remembers measures".split()
ADJ = "old quiet bright narrow distant small heavy early late green silent quick".split()


def sentences(rng: random.Random, words: list[str], n: int) -> str:
    out = []
    for _ in range(n):
        s = (f"the {rng.choice(ADJ)} {rng.choice(words)} {rng.choice(VERBS)} the {rng.choice(words)} "
             f"near the {rng.choice(ADJ)} {rng.choice(words)}")
        if rng.random() < 0.3:
            s += f" in {rng.randint(1700, 2024)}"
        out.append(s[0].upper() + s[1:] + ".")
    return " ".join(out)


def make_docs(topic: str, n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [sentences(rng, TOPICS[topic], rng.randint(3, 7)) for _ in range(n)]


def tokenize(docs: list[str], tok_file: Path, work: Path, name: str) -> Path:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.tokens import DocumentTokenizer

    src = work / f"src-{name}"
    src.mkdir(parents=True)
    with open(src / "docs.jsonl", "w") as f:
        for i, text in enumerate(docs):
            f.write(json.dumps({"id": f"{name}-{i}", "text": text}) + "\n")
    out = work / name
    LocalPipelineExecutor(
        pipeline=[JsonlReader(str(src)),
                  DocumentTokenizer(str(out), tokenizer_name_or_path=str(tok_file), eos_token=EOS, seed=0)],
        tasks=1, workers=1, logging_dir=str(work / f"logs-{name}"), skip_completed=False).run()
    return out


def make_data(out: Path) -> dict:
    from jobs.adapters.datatrove_blocks import TrainTokenizer

    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    docs_a, docs_b = make_docs("a", 360, 1), make_docs("b", 160, 2)
    tok = TrainTokenizer(str(out / "tokenizer"), vocab_size=400, min_frequency=2)._train(docs_a + docs_b)
    (out / "tokenizer").mkdir()
    tok_file = out / "tokenizer" / "tokenizer.json"
    tok.save(str(tok_file))
    folders = {"a": tokenize(docs_a, tok_file, out, "a"), "b": tokenize(docs_b, tok_file, out, "b"),
               "small": tokenize(docs_b[:1], tok_file, out, "small")}
    empty = out / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no token files here\n")
    info = {"tokenizer": str(tok_file), "empty": str(empty), "vocab": tok.get_vocab_size(),
            **{k: str(v) for k, v in folders.items()},
            "tokens": {k: sum(f.stat().st_size for f in v.glob("*.ds")) // 2 for k, v in folders.items()},
            "seconds": round(time.time() - t0, 2)}
    (out / "data.json").write_text(json.dumps(info, indent=1))
    return info


# -- jobs ---------------------------------------------------------------------------------------------
def context(job: dict):
    from jobs.context import TaskContext

    return TaskContext(run_dir=Path(job["ckpt"]).parent, run_id="test", stage="pretrain", task=0, index=0,
                       num_tasks=1, point=0, params={}, output_dir=Path(job["out"]), checkpoint_dir=Path(job["ckpt"]),
                       inputs={}, restart_count=int(job.get("restart", 0)))


def run_train(job: dict) -> dict:
    from transformers import TrainerCallback

    from jobs.context import Requeue
    from jobs.adapters.trainer import train

    ctx = context(job)
    lines: list[str] = []
    extra = []
    if job.get("stop_at"):
        class StopAt(TrainerCallback):  # stands in for the pre-timeout signal handler
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step >= job["stop_at"]:
                    ctx.stop_requested.set()

        extra.append(StopAt())

    def log(msg):
        lines.append(msg)
        print(f"[{job['name']}] {msg}", file=sys.stderr, flush=True)

    tracking = None
    if job.get("tracking_spec"):  # as jobs/kinds/pretrain.py does on rank 0 (jobs/adapters/tracking.py prepare)
        from jobs.adapters import tracking as trackers

        tracking = trackers.prepare(job["tracking_spec"], 0, log=log)
    t0 = time.time()
    try:
        result = train(ctx, job["train"], job["data"], job["tokenizer"], log=log, callbacks=extra, tracking=tracking)
        return {"result": result, "log": lines, "wall": round(time.time() - t0, 2)}
    except Requeue:
        return {"requeue": True, "log": lines, "wall": round(time.time() - t0, 2)}
    except Exception as e:  # noqa: BLE001 - the test asserts on the error
        return {"error": type(e).__name__, "message": str(e), "log": lines,
                "traceback": traceback.format_exc()[-3000:], "wall": round(time.time() - t0, 2)}


def run_compare(job: dict) -> dict:
    from safetensors.torch import load_file

    a, b = (load_file(str(Path(d) / "model.safetensors")) for d in (job["a"], job["b"]))
    assert a.keys() == b.keys(), (sorted(a), sorted(b))
    diff = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    return {"max_abs_diff": diff, "tensors": len(a), "identical": all(bool((a[k] == b[k]).all()) for k in a)}


def run_load(job: dict) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(job["dir"])
    tok = AutoTokenizer.from_pretrained(job["dir"])
    ids = tok("The old river", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        gen = model.generate(ids, max_new_tokens=8, do_sample=False)
    return {"model": type(model).__name__, "tokenizer": type(tok).__name__, "eos_token": tok.eos_token,
            "eos_token_id": tok.eos_token_id, "config_eos": model.config.eos_token_id, "vocab": len(tok),
            "text": tok.decode(gen[0]), "params": sum(p.numel() for p in model.parameters())}


def run_mix(job: dict) -> dict:
    from jobs.adapters.trainer import MixedTokens, open_folder

    folders = list(job["data"])
    sources = [open_folder(f, job["seq_len"], 2) for f in folders]
    weights = list(job["data"].values())
    one, two = (MixedTokens(sources, weights, job["samples"], seed=job["seed"]) for _ in range(2))
    other = MixedTokens(sources, weights, job["samples"], seed=job["seed"] + 1)
    # every item is the folder sample it says it is
    ok = all(bool((one[i]["input_ids"] == sources[one.choice[i]][int(one.offset[i])]["input_ids"][:-1]).all())
             for i in range(0, job["samples"], 7))
    return {"counts": dict(zip(folders, one.counts)), "lens": dict(zip(folders, (len(s) for s in sources))),
            "same_seed_same_order": one.choice.tolist() == two.choice.tolist()
            and all(bool((one[i]["input_ids"] == two[i]["input_ids"]).all()) for i in range(job["samples"])),
            "other_seed_differs": one.choice.tolist() != other.choice.tolist(), "items_match": ok}


def main(argv: list[str]) -> int:
    if argv[0] == "data":
        print(json.dumps(make_data(Path(argv[1]))))
        return 0
    if argv[0] == "run":
        jobs = json.loads(Path(argv[1]).read_text())
        results = {}
        for job in jobs:
            fn = {"train": run_train, "compare": run_compare, "load": run_load, "mix": run_mix}[job["kind"]]
            t0 = time.time()
            results[job["name"]] = fn(job)
            results[job["name"]].setdefault("wall", round(time.time() - t0, 2))
            print(f"[helper] {job['name']}: {time.time() - t0:.2f} s", file=sys.stderr, flush=True)
        Path(argv[2]).write_text(json.dumps(results, indent=1, default=str))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
