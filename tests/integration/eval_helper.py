"""Runs in the cpu stage environment for tests/integration/test_lighteval.py, all in ONE process (the
way an evaluation stage scores many checkpoints):

  python eval_helper.py JOB RESULT

JOB (JSON): {"work": folder, "train": a Train config (jobs/adapters/trainer.py), "docs": corpus size,
"train_docs": clean documents tokenized for training, "vocab": tokenizer size, "samples": rows per task}.

1. the demo corpus (jobs.demo.corpus.make_corpus) and the held-out paragraphs (written out for the test);
2. a byte-level BPE tokenizer and datatrove token files from the corpus's clean documents, a tiny Llama
   trained on them with jobs.adapters.trainer (hf_train_helper.run_train), checkpoints along the way;
3. the evaluation tasks (jobs.adapters.eval_tasks.write_tasks) and jobs.adapters.lighteval.evaluate on the first
   checkpoint, the last one, and the first again (repeated calls in one process); a task of long texts
   (more tokens than the model's context); bits per byte computed directly with transformers; the
   tasks written again with the same seed and another one;
4. the refusals: an empty folder, a garbage config.json, an unknown model type, broken weights, a folder
   that does not exist, a bad task row.

RESULT: what each step returned (or the error it raised), with timings.
"""
from __future__ import annotations

import gzip
import json
import shutil
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

import hf_train_helper  # noqa: E402  (puts the repository root on sys.path too)


def refusal(fn) -> dict:
    try:
        fn()
    except ValueError as e:
        return {"error": "ValueError", "message": str(e)}
    except Exception as e:  # noqa: BLE001 - the test asserts on the type
        return {"error": type(e).__name__, "message": str(e), "traceback": traceback.format_exc()[-2000:]}
    return {"error": None}


def direct_bits_per_byte(model_dir: Path, texts: list[str]) -> float:
    import math

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    total, size = 0.0, 0
    with torch.no_grad():
        for text in texts:
            ids = [tok.eos_token_id] + tok(text, add_special_tokens=False)["input_ids"]
            logprobs = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)
            total += float(logprobs[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].sum())
            size += len(text.encode("utf-8"))
    return -total / size / math.log(2)


def main(job_file: str, result_file: str) -> int:
    t_start = time.time()
    job = json.loads(Path(job_file).read_text())
    work = Path(job["work"])
    res: dict = {"timings": {}}
    timings = res["timings"]

    # 1. corpus and held-out paragraphs (stdlib only)
    from jobs.demo.corpus import held_out_paragraphs, make_corpus

    t = time.time()
    corpus = work / "corpus"
    res["corpus"] = make_corpus(corpus, docs=job["docs"], shards=2, seed=0)
    held = held_out_paragraphs()
    (work / "held_out.json").write_text(json.dumps(held))
    timings["corpus"] = round(time.time() - t, 2)

    # 2. tokenizer, token files, training
    from jobs.adapters.datatrove_blocks import TrainTokenizer

    t = time.time()
    docs = [json.loads(line) for f in sorted(corpus.glob("*.jsonl.gz")) for line in gzip.open(f, "rt")]
    clean = [d["text"] for d in docs if d["metadata"]["kind"] == "clean"][:job["train_docs"]]
    tok = TrainTokenizer(str(work / "tok"), vocab_size=job["vocab"], min_frequency=2)._train(clean)
    (work / "tokenizer").mkdir()
    tok_file = work / "tokenizer" / "tokenizer.json"
    tok.save(str(tok_file))
    folder = hf_train_helper.tokenize(clean, tok_file, work, "clean")
    timings["tokenize"] = round(time.time() - t, 2)
    t = time.time()
    trained = hf_train_helper.run_train({"name": "train", "train": job["train"], "data": {str(folder): 1.0},
                                         "tokenizer": str(tok_file), "ckpt": str(work / "ckpt"),
                                         "out": str(work / "out")})
    timings["train"] = round(time.time() - t, 2)
    res["train"] = {k: v for k, v in trained.items() if k != "log"}
    if "result" not in trained:
        Path(result_file).write_text(json.dumps(res, indent=1, default=str))
        return 1
    ckpts = sorted((work / "ckpt").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    first, last = ckpts[0], ckpts[-1]
    res["checkpoints"] = [p.name for p in ckpts]

    # 3. tasks and evaluation, three calls in this process
    from jobs.adapters.eval_tasks import write_tasks
    from jobs.adapters.lighteval import evaluate

    t = time.time()
    specs = write_tasks(work / "tasks", n=job["samples"], seed=0)
    res["specs"] = specs
    timings["write_tasks"] = round(time.time() - t, 2)
    tasks = [specs["clean_next"], specs["clean_bpb"]]
    res["evals"] = []
    for name, ckpt in (("first", first), ("last", last), ("first_again", first)):
        t = time.time()
        lines: list[str] = []
        scores = evaluate(str(ckpt), tasks, str(work / "eval" / name), batch_size=job.get("batch_size", 8),
                          log=lines.append)
        res["evals"].append({"name": name, "checkpoint": ckpt.name, "scores": scores, "log": lines,
                             "seconds": round(time.time() - t, 2),
                             "results_files": [p.name for p in (work / "eval" / name).glob("results_*.json")]})

    import torch

    res["grad_enabled_after"] = torch.is_grad_enabled()  # lighteval's import turns it off process-wide

    # the same file format from your own data: three long texts (more tokens than the model's context)
    long_rows = work / "long.jsonl"
    held_rows = [json.loads(line)["text"] for line in open(specs["clean_bpb"]["path"], encoding="utf-8")]
    long_texts = ["\n\n".join(held_rows[i:i + 12]) for i in (0, 12, 24)]
    long_rows.write_text("".join(json.dumps({"text": t}) + "\n" for t in long_texts))
    long_task = {**specs["clean_bpb"], "name": "long_bpb", "path": str(long_rows)}
    res["long"] = evaluate(str(last), [long_task], str(work / "eval" / "long"), log=lambda _: None)["long_bpb"]
    res["long_tokens"] = max(len(tok.encode(t).ids) for t in long_texts)

    # bits per byte computed directly with transformers (no lighteval): each text after EOS
    res["direct_bpb"] = direct_bits_per_byte(last, held_rows)

    # write_tasks is deterministic for a seed, and the seed matters
    same = write_tasks(work / "tasks-again", n=job["samples"], seed=0)
    other = write_tasks(work / "tasks-seed1", n=job["samples"], seed=1)
    res["write_tasks_same"] = all(Path(same[k]["path"]).read_bytes() == Path(specs[k]["path"]).read_bytes()
                                  for k in specs)
    res["write_tasks_seed_differs"] = (Path(other["clean_next"]["path"]).read_bytes()
                                       != Path(specs["clean_next"]["path"]).read_bytes())

    # 4. refusals
    t = time.time()
    empty = work / "bad" / "empty"
    empty.mkdir(parents=True)
    garbage = work / "bad" / "garbage"
    garbage.mkdir()
    (garbage / "config.json").write_text("this is { not a model config")
    (garbage / "model.safetensors").write_bytes(b"\0" * 64)
    unknown = work / "bad" / "unknown"
    shutil.copytree(first, unknown)
    (unknown / "config.json").write_text(json.dumps({"model_type": "no-such-architecture"}))
    broken = work / "bad" / "broken"
    shutil.copytree(first, broken)
    (broken / "model.safetensors").write_bytes(b"garbage, not safetensors")
    bad_rows = work / "bad" / "rows.jsonl"
    bad_rows.write_text('{"query": "q", "choices": ["a", "b"], "gold": 0}\n'
                        '{"query": "q", "choices": ["a"], "gold": 3}\n')
    bad_task = {**specs["clean_next"], "name": "mine", "path": str(bad_rows)}
    res["refusals"] = {
        "empty": refusal(lambda: evaluate(str(empty), tasks, str(work / "eval" / "x"))),
        "garbage": refusal(lambda: evaluate(str(garbage), tasks, str(work / "eval" / "x"))),
        "unknown": refusal(lambda: evaluate(str(unknown), tasks, str(work / "eval" / "x"))),
        "broken": refusal(lambda: evaluate(str(broken), tasks, str(work / "eval" / "x"))),
        "missing": refusal(lambda: evaluate(str(work / "bad" / "nowhere"), tasks, str(work / "eval" / "x"))),
        "bad_row": refusal(lambda: evaluate(str(first), [bad_task], str(work / "eval" / "x"))),
    }
    timings["refusals"] = round(time.time() - t, 2)
    timings["total"] = round(time.time() - t_start, 2)
    Path(result_file).write_text(json.dumps(res, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
