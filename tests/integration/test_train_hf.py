"""The hf training backend (jobs/adapters/trainer.py) on real libraries, CPU, offline: a tiny Llama trained with
transformers' Trainer on datatrove-tokenized folders made here (corpus -> byte-level BPE tokenizer ->
DocumentTokenizer), checkpoints marked complete, an interrupted run that resumes to bit-identical
weights, an unmarked checkpoint set aside, a weighted mixture of two folders.

The heavy work runs in the cpu stage environment (hf_train_helper.py in a subprocess): three
processes in all, as a requeued task would start a fresh one."""
from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hf_train_helper import tiny_train

from jobs import layout
from jobs.runtime.progress import read_progress

HELPER = Path(__file__).with_name("hf_train_helper.py")

# 40 steps of 2 x 2 x 32 = 128 tokens, a checkpoint every 10 steps
TRAIN = tiny_train(steps=40, every=10, seq_len=32, micro_batch=2, grad_accum=2)
STOP_AT = 17


def helper(cpu_python: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "SLURM_CPUS_PER_TASK": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    p = subprocess.run([str(cpu_python), str(HELPER), *args], capture_output=True, text=True, timeout=timeout, env=env)
    assert p.returncode == 0, f"helper {args[0]} exited {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-6000:]}"
    return p


def run_jobs(cpu_python: Path, folder: Path, name: str, jobs: list) -> dict:
    spec, out = folder / f"{name}.jobs.json", folder / f"{name}.results.json"
    spec.write_text(json.dumps(jobs, indent=1))
    helper(cpu_python, "run", str(spec), str(out))
    return json.loads(out.read_text())


def train_job(name: str, data: dict, root: Path, run: str, folders=None, **kw) -> dict:
    cfg = copy.deepcopy(TRAIN)
    for key, value in kw.pop("set", {}).items():  # "optimizer.lr": 1e-3
        node = cfg
        *path, last = key.split(".")
        for part in path:
            node = node[part]
        node[last] = value
    return {"kind": "train", "name": name, "train": cfg, "tokenizer": data["tokenizer"],
            "data": folders or {data["a"]: 1.0}, "ckpt": str(root / run / "ckpt"),
            "out": str(root / run / f"out-{name}"), **kw}


@pytest.fixture(scope="module")
def data(cpu_python, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("hf-data")
    helper(cpu_python, "data", str(out / "d"))
    return json.loads((out / "d" / "data.json").read_text())


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hf-train")


@pytest.fixture(scope="module")
def first(cpu_python, data, root) -> dict:
    """Process 1: run A uninterrupted, run B stopped after step 17, the mixture, the refusals."""
    mix = {data["a"]: 0.7, data["b"]: 0.3}
    jobs = [
        train_job("A", data, root, "A"),
        train_job("B", data, root, "B", stop_at=STOP_AT),
        {"kind": "mix", "name": "mix", "data": mix, "seq_len": 32, "samples": 1000, "seed": 1},
        train_job("M1", data, root, "M1", folders=mix, set={"tokens": 8 * 128}),
        train_job("M2", data, root, "M2", folders=mix, set={"tokens": 8 * 128}),
        train_job("M3", data, root, "M3", folders=mix, set={"tokens": 8 * 128, "seed": 2}),
        train_job("vocab", data, root, "E1", set={"model.vocab_size": 100}),
        train_job("moe", data, root, "E2", set={"model.num_experts": 4}),
        train_job("empty", data, root, "E3", folders={data["empty"]: 1.0}),
        train_job("small", data, root, "E4", folders={data["a"]: 0.5, data["small"]: 0.5}),
        train_job("budget", data, root, "E5", set={"tokens": 100}),
    ]
    return run_jobs(cpu_python, root, "first", jobs)


@pytest.fixture(scope="module")
def second(cpu_python, data, root, first) -> dict:
    """Process 2, the requeued attempt: B continues; B3 (a copy of B whose newest checkpoint lost its
    marker, as if killed while saving) continues; A once more (its final checkpoint exists)."""
    assert first["B"].get("requeue"), first["B"]
    shutil.copytree(root / "B" / "ckpt", root / "B3" / "ckpt")
    (root / "B3" / "ckpt" / f"checkpoint-{STOP_AT}" / "launcher-complete.json").unlink()
    jobs = [
        train_job("B2", data, root, "B", restart=1),
        train_job("B3", data, root, "B3", restart=1),
        train_job("A2", data, root, "A", restart=1),
        {"kind": "compare", "name": "A-B2", "a": str(root / "A" / "out-A" / "model"),
         "b": str(root / "B" / "out-B2" / "model")},
        {"kind": "compare", "name": "A-B3", "a": str(root / "A" / "out-A" / "model"),
         "b": str(root / "B3" / "out-B3" / "model")},
        {"kind": "compare", "name": "ckpt30", "a": str(root / "A" / "ckpt" / "checkpoint-30"),
         "b": str(root / "B" / "ckpt" / "checkpoint-30")},
        {"kind": "load", "name": "load", "dir": str(root / "A" / "out-A" / "model")},
        {"kind": "load", "name": "load-ckpt", "dir": str(root / "A" / "ckpt" / "checkpoint-20")},
    ]
    return run_jobs(cpu_python, root, "second", jobs)


def ok(res: dict) -> dict:
    assert "result" in res, res.get("traceback") or res
    return res["result"]


def marker(ckpt: Path) -> dict:
    return json.loads((ckpt / "launcher-complete.json").read_text())


def test_trains_marks_every_checkpoint_and_writes_a_loadable_model(first, second, root):
    a = ok(first["A"])
    assert a["final_step"] == a["max_steps"] == 40 and a["tokens"] == 40 * 128
    assert a["checkpoints"] == [10, 20, 30, 40] and a["stop_checkpoints"] == []
    assert a["resumed_from"] is None and a["params"] > 0 and a["tokens_per_s"] > 0 and a["train_seconds"] > 0
    assert a["final_train_loss"] < 5.5 and 0 < a["final_loss"] < 5.5  # it learned (ln 400 = 6.0)
    assert any(line == "starting from scratch (attempt 1)" for line in first["A"]["log"])
    ckpts = root / "A" / "ckpt"
    assert sorted(p.name for p in ckpts.iterdir()) == [f"checkpoint-{n}" for n in (10, 20, 30, 40)]
    for n in (10, 20, 30, 40):
        m = marker(ckpts / f"checkpoint-{n}")
        assert m["step"] == n and m["tokens"] == n * 128 and m["reason"] == ("final" if n == 40 else "interval")
        assert isinstance(m["loss"], float)
        for f in ("model.safetensors", "config.json", "optimizer.pt", "scheduler.pt", "trainer_state.json",
                  "tokenizer.json"):
            assert (ckpts / f"checkpoint-{n}" / f).is_file(), (n, f)
    # the live progress file (jobs/adapters/trainer_progress.py): the last step, forced, with its checkpoint
    progress = read_progress(layout.progress_path(root / "A", "pretrain", 0))
    assert progress["step"] == progress["total_steps"] == 40 and progress["tokens"] == 40 * 128
    assert isinstance(progress["loss"], float) and progress["first_step"] == 0 and progress["tokens_per_s"] > 0
    assert progress["last_checkpoint"] == str(ckpts / "checkpoint-40") and progress["time"] >= progress["started"]
    out = root / "A" / "out-A"
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= {p.name for p in (out / "model").iterdir()}
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "loss" in m] == [5, 10, 15, 20, 25, 30, 35, 40]
    assert metrics[-1]["step"] == 40 and "train_runtime" in metrics[-1]
    for name in ("load", "load-ckpt"):  # the output, and one checkpoint, load as HF folders
        loaded = second[name]
        assert loaded["model"] == "LlamaForCausalLM" and loaded["eos_token"] == "<|endoftext|>"
        assert loaded["eos_token_id"] == loaded["config_eos"] and loaded["params"] == a["params"]
        assert loaded["text"].startswith("The old river")
    # run again after the final checkpoint (killed before the outputs were written): nothing trained
    a2 = ok(second["A2"])
    assert a2["resumed_from"] == 40 and a2["final_step"] == 40 and a2["final_loss"] == a["final_loss"]


def test_interrupted_run_resumes_to_the_same_weights(first, second, root):
    a, b = ok(first["A"]), first["B"]
    assert b.get("requeue") is True, b
    assert any("stop requested at step 17/40" in line for line in b["log"])
    ckpts = root / "B" / "ckpt"
    m = marker(ckpts / "checkpoint-17")
    assert m["step"] == 17 and m["reason"] == "stop" and m["tokens"] == 17 * 128
    b2 = ok(second["B2"])
    assert any(line.startswith("resuming from checkpoint-17 (step 17, 2,176 tokens)") for line in second["B2"]["log"])
    assert b2["resumed_from"] == 17 and b2["final_step"] == a["final_step"] == 40
    assert b2["checkpoints"] == [10, 20, 30, 40] and b2["stop_checkpoints"] == [17]
    progress = read_progress(layout.progress_path(root / "B", "pretrain", 0))  # the resumed attempt's
    assert progress["first_step"] == 17 and progress["step"] == 40 and progress["tokens"] == 40 * 128
    print(f"final_loss A {a['final_loss']!r}  B (interrupted at 17) {b2['final_loss']!r}")
    assert abs(b2["final_loss"] - a["final_loss"]) < 1e-5
    assert second["A-B2"]["max_abs_diff"] < 1e-6, second["A-B2"]
    assert second["ckpt30"]["max_abs_diff"] < 1e-6, second["ckpt30"]
    assert b2["final_train_loss"] == pytest.approx(a["final_train_loss"], abs=1e-5)


def test_checkpoint_without_marker_is_set_aside_and_the_previous_one_resumed(first, second, root):
    a, b3 = ok(first["A"]), ok(second["B3"])
    names = sorted(p.name for p in (root / "B3" / "ckpt").iterdir())
    aside = [n for n in names if n.startswith("checkpoint-17.partial-")]
    assert len(aside) == 1 and "checkpoint-17" not in names, names
    assert any(f"moved aside to {aside[0]}" in line for line in second["B3"]["log"])
    assert any(line.startswith("resuming from checkpoint-10 (step 10, 1,280 tokens)") for line in second["B3"]["log"])
    assert b3["resumed_from"] == 10 and b3["final_step"] == 40
    assert abs(b3["final_loss"] - a["final_loss"]) < 1e-5
    assert second["A-B3"]["max_abs_diff"] < 1e-6, second["A-B3"]


def test_two_folders_mix_by_weight_deterministically(first, data):
    mix = first["mix"]
    counts = mix["counts"]
    assert counts[data["a"]] + counts[data["b"]] == 1000
    assert 620 <= counts[data["a"]] <= 780 and counts[data["b"]] >= 220, counts
    assert mix["same_seed_same_order"] and mix["other_seed_differs"] and mix["items_match"]
    m1, m2, m3 = ok(first["M1"]), ok(first["M2"]), ok(first["M3"])
    assert m1["final_step"] == 8
    drawn = [line for line in first["M1"]["log"] if line.startswith("data ")]
    assert len(drawn) == 2 and all(" 0 drawn" not in line for line in drawn), drawn
    assert m1["final_loss"] == m2["final_loss"] and m1["final_loss"] != m3["final_loss"]


def test_refuses_what_cannot_train(first):
    cases = {
        "vocab": ("ValueError", "train.model.vocab_size"),
        "moe": ("NotImplementedError", "MoE needs backend=nanotron"),
        "empty": ("FileNotFoundError", "no tokenized *.ds files"),
        "small": ("ValueError", "one step needs 4"),
        "budget": ("ValueError", "less than one step"),
    }
    for name, (error, text) in cases.items():
        res = first[name]
        assert res.get("error") == error and text in res["message"], (name, res)
