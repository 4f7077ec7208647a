"""The hf backend data parallel (jobs/adapters/hf_ddp.py): transformers' Trainer under torchrun, DDP
with gloo on CPU, on real libraries and tiny data made here (issue 19 item 3).

- 2 processes x micro_batch 2 train like 1 process x micro_batch 4 (the same global batch): the
  logged losses agree step by step and the final weights within float reordering;
- the stop signal, sent to torchrun as jobs.task forwards it, stops both ranks at the same step with
  one marked checkpoint; the next attempt resumes from it and ends where the uninterrupted run ends.
The launcher's path (cluster=local: kind pretrain, dp=2) is at the end; the dev cluster's 2 nodes in
tests/integration/test_multinode.py."""
from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import CLI, ROOT, wait_for
from hf_train_helper import tiny_train
from test_train_hf import helper, run_jobs

from jobs import layout

STEPS, EVERY = 24, 8
ONE = tiny_train(steps=STEPS, every=EVERY, seq_len=32, micro_batch=4, log_every=1)
# the same token budget and checkpoint interval: dp 2 x micro_batch 2 = 4 samples per step, as ONE
TWO = {**copy.deepcopy(ONE), "micro_batch": 2, "parallelism": {"dp": 2}}


@pytest.fixture(scope="module")
def data(cpu_python, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("ddp-data")
    helper(cpu_python, "data", str(out / "d"))
    return json.loads((out / "d" / "data.json").read_text())


def worker_args(root: Path, name: str, data: dict, train: dict, restart: int = 0) -> Path:
    """What jobs/adapters/hf_ddp.launch writes for the workers (a TaskContext's fields and the config)."""
    train = {**train, "tokenizer": data["tokenizer"]}
    ctx = {"run_dir": str(root), "run_id": "test", "stage": "pretrain", "task": 0, "index": 0, "num_tasks": 1,
           "point": 0, "params": {}, "output_dir": str(root / name / "out"), "checkpoint_dir": str(root / name / "ckpt"),
           "inputs": {}, "restart_count": restart}
    path = root / f"{name}-{restart}.args.json"
    path.write_text(json.dumps({"ctx": ctx, "train": train, "data": {data["a"]: 1.0}, "tokenizer": data["tokenizer"],
                                "result": str(root / name / f"result-{restart}.json"), "stop_signal": "USR2"}))
    return path


def torchrun(cpu_python: Path, args: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [str(cpu_python), "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "--max-restarts=0",
         "--signals-to-handle=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR2", "-m", "jobs.adapters.hf_ddp", str(args)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def losses(out: Path) -> dict:
    return {e["step"]: e["loss"] for e in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
            if "loss" in e}


@pytest.fixture(scope="module")
def runs(cpu_python, data, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("ddp")
    single = run_jobs(cpu_python, root, "one", [{"kind": "train", "name": "one", "train": ONE,
                                                 "tokenizer": data["tokenizer"], "data": {data["a"]: 1.0},
                                                 "ckpt": str(root / "one" / "ckpt"), "out": str(root / "one" / "out")}])
    p = torchrun(cpu_python, worker_args(root, "ddp", data, TWO))
    log, _ = p.communicate(timeout=600)
    assert p.returncode == 0, log[-5000:]
    # Interrupted: the stop signal once the first interval checkpoint is marked, as jobs.task forwards it.
    p = torchrun(cpu_python, worker_args(root, "stopped", data, TWO))
    marker = root / "stopped" / "ckpt" / f"checkpoint-{EVERY}" / "launcher-complete.json"
    wait_for(lambda: marker.exists() or p.poll() is not None, 300, "the first checkpoint", poll=0.1)
    os.killpg(p.pid, signal.SIGUSR2)
    stop_log, _ = p.communicate(timeout=300)
    p = torchrun(cpu_python, worker_args(root, "stopped", data, TWO, restart=1))
    resume_log, _ = p.communicate(timeout=600)
    assert p.returncode == 0, resume_log[-5000:]
    return {"root": root, "single": single["one"], "log": log, "stop_log": stop_log,
            "resume_log": resume_log}


def compare(cpu_python: Path, root: Path, a: Path, b: Path) -> dict:
    return run_jobs(cpu_python, root, f"cmp-{time.time_ns()}", [{"kind": "compare", "name": "c", "a": str(a),
                                                                 "b": str(b)}])["c"]


def test_two_ranks_train_like_one_process_with_the_same_global_batch(runs, cpu_python):
    root = runs["root"]
    assert "result" in runs["single"], runs["single"]
    ddp = json.loads((root / "ddp" / "result-0.json").read_text())
    one = runs["single"]["result"]
    assert ddp["dp"] == 2 and ddp["tokens_per_step"] == one["tokens_per_step"] == 4 * 32
    assert ddp["final_step"] == one["final_step"] == STEPS
    a, b = losses(root / "one" / "out"), losses(root / "ddp" / "out")
    assert sorted(a) == sorted(b) == list(range(1, STEPS + 1))
    worst = max(abs(a[s] - b[s]) / abs(a[s]) for s in a)
    assert worst < 1e-3, (worst, a, b)  # the same samples per step; only the reduction order differs
    assert abs(ddp["final_loss"] - one["final_loss"]) < 1e-3 * one["final_loss"], (ddp, one)
    diff = compare(cpu_python, root, root / "one" / "out" / "model", root / "ddp" / "out" / "model")
    assert diff["max_abs_diff"] < 1e-3, diff
    # one log line per event, from rank 0 only
    assert runs["log"].count(f"checkpoint-{EVERY} saved and marked complete") == 1, runs["log"][-3000:]


def test_a_stop_signal_stops_both_ranks_at_one_step_and_the_next_attempt_resumes(runs, cpu_python):
    root = runs["root"]
    stop_log = runs["stop_log"]
    assert "stop requested at step" in stop_log, stop_log[-4000:]
    ckpts = sorted(int(p.name.split("-")[1]) for p in (root / "stopped" / "ckpt").glob("checkpoint-*")
                   if (p / "launcher-complete.json").exists())
    stopped_at = [s for s in ckpts if s % EVERY]
    assert len(stopped_at) <= 1, ckpts  # both ranks stopped at the same step: one stop checkpoint
    assert "resuming from checkpoint-" in runs["resume_log"], runs["resume_log"][-3000:]
    ddp = json.loads((root / "stopped" / "result-1.json").read_text())
    assert ddp["resumed_from"] >= EVERY and ddp["final_step"] == STEPS, ddp
    diff = compare(cpu_python, root, root / "ddp" / "out" / "model", root / "stopped" / "out" / "model")
    assert diff["max_abs_diff"] < 1e-5, diff


@pytest.mark.slow
def test_the_launcher_runs_a_data_parallel_hf_stage_on_the_local_backend(tmp_path, cpu_python, data):
    cli = CLI(tmp_path)
    cli("run", "pipeline=train", "cluster=local", f"pipeline.vars.data={data['a']}",
        f"pipeline.vars.tokenizer={data['tokenizer']}", "model=tiny", "~pipeline.stages.evaluate",
        "pipeline.vars.tokens=16384", "pipeline.vars.checkpoint_every_tokens=8192",
        "pipeline.stages.train.train.micro_batch=2", "pipeline.stages.train.train.seq_len=32",
        "pipeline.stages.train.train.parallelism.dp=2", "pipeline.stages.train.resources.cpus_per_task=2",
        "pipeline.stages.train.tracking.backend=tensorboard")
    st = cli.wait(timeout=600)
    logs = cli("logs", "latest", "train", check=False)
    assert st["state"] == "COMPLETED", (st, logs.stdout[-4000:], logs.stderr[-4000:])
    result = json.loads((layout.output_dir(cli.run_dir(), "train", 0, 0) / "result.json").read_text())
    assert result["dp"] == 2 and result["tokens"] == 16384, result
    assert "1 node(s) x 2 process(es)" in logs.stdout + logs.stderr
    # tracking (docs/tracking.md): rank 0 alone writes TensorBoard events (the launcher's config file + the
    # Trainer's callback), a loss at every logged step of the global run
    folder = cli.run_dir() / "stages" / "train" / "tracking" / "0"
    assert len(list(folder.glob("events.out.tfevents.*"))) == 2, sorted(p.name for p in folder.iterdir())
    read = ("import sys; from tensorboard.backend.event_processing.event_accumulator import EventAccumulator as A; "
            "a = A(sys.argv[1]); a.Reload(); print([e.step for e in a.Scalars('train/loss')])")
    p = subprocess.run([str(cpu_python), "-c", read, str(folder)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads(p.stdout.strip().splitlines()[-1]) == list(range(8, result["final_step"] + 1, 8)), p.stdout
