"""On cluster=local: `launcher usage` from the local scheduler's records (every stage has an elapsed
time and CPU time, a requeue is counted), and a training's live progress file (the step rises while it
runs; at the end step == total_steps, a float loss, the last checkpoint), then its usage."""
from __future__ import annotations

import json
import subprocess
import time

import pytest

from conftest import wait_for

from jobs import layout
from jobs.runtime.progress import read_progress



def usage(cli, *args: str) -> dict:
    return json.loads(cli("usage", *args, "--json").stdout)


def test_usage_of_a_local_run_from_the_drivers_records(cli):
    cli("run", "pipeline=smoke", "cluster=local", "wait=true", "poll_s=0.3")
    u = usage(cli, "latest")
    (run,) = u["runs"]
    stages = {s["name"]: s for s in run["stages"]}
    assert {n: s["tasks"] for n, s in stages.items()} == {"shards": 4, "reduce": 1, "fanout": 2, "checkpointing": 1}
    for s in stages.values():
        assert s["elapsed_s"] > 0 and s["cpu_used_hours"] > 0 and 0 < s["cpu_efficiency"] <= 1.5, s
        assert s["gpu_hours"] == 0 and s["planned_gpu_hours"] == 0
    assert stages["checkpointing"]["requeues"] >= 1 and stages["checkpointing"]["requeue_lost_s"] > 0
    assert run["total"]["elapsed_s"] == pytest.approx(sum(s["elapsed_s"] for s in stages.values()), abs=0.01)
    assert u["total"]["tasks"] == 8
    text = cli("usage", "latest").stdout
    assert "checkpointing" in text and "CPU eff" in text
    # a campaign: both runs' tasks (the local scheduler numbers each run's jobs from 1: they must not merge)
    # each night computes (--rerun): an identical run would read the outputs of the runs before it
    cli("run", "--rerun", "shards", "pipeline=smoke", "cluster=local", "wait=true", "poll_s=0.3", "campaign=nightly")
    cli("run", "--rerun", "shards", "pipeline=smoke", "cluster=local", "wait=true", "poll_s=0.3", "campaign=nightly")
    c = usage(cli, "nightly")
    assert len(c["runs"]) == 2 and c["total"]["tasks"] == 16
    assert c["total"]["elapsed_s"] == pytest.approx(sum(r["total"]["elapsed_s"] for r in c["runs"]), abs=0.01)
    # what `launcher report` shows per data variant (one variant here: "all")
    from launcher.run.usage import cost_per_variant, runs_of

    assert cost_per_variant(runs_of("nightly", cli.run_root)[0])["all"]["tasks"] == 16



def test_training_progress_rises_while_it_runs_and_ends_at_the_last_step(cli, tokenized):
    steps = 40  # 2 to 50 steps/s on 2 cores, busy or not: seconds, and several progress writes
    cli.env["LAUNCHER_PROGRESS_INTERVAL_S"] = "0.1"  # the jobs inherit it through the local scheduler
    t = "pipeline.stages.train"
    cli("run", "pipeline=train", "cluster=local", "model=tiny", "~pipeline.stages.evaluate",
        f"pipeline.vars.data={tokenized['a']}", f"pipeline.vars.tokenizer={tokenized['tokenizer']}",
        f"{t}.train.seq_len=32", f"{t}.train.micro_batch=2", f"{t}.train.log_every_steps=10",
        f"pipeline.vars.tokens={steps * 64}", f"pipeline.vars.checkpoint_every_tokens={steps * 32}")
    path = layout.progress_path(cli.run_dir(), "train", 0)
    seen = []  # the steps read while training goes on (the file is rewritten every 0.1 s here)
    deadline = time.time() + 180
    while time.time() < deadline and len(set(seen)) < 2:
        rec = read_progress(path) or {}
        if rec.get("step", 0) >= steps:
            break  # ended before a second read: too short a training
        if rec.get("step", 0) > 0:
            seen.append(rec["step"])
        time.sleep(0.05)
    assert len(set(seen)) >= 2 and seen == sorted(seen), f"the step did not rise while training: {seen}"
    st = cli.wait(timeout=180)
    assert st["state"] == "COMPLETED", st
    rec = read_progress(path)
    assert rec["step"] == rec["total_steps"] == steps and rec["tokens"] == steps * 64
    assert isinstance(rec["loss"], float) and rec["tokens_per_s"] > 0 and rec["rank"] == 0
    assert rec["last_checkpoint"].endswith(f"checkpoint-{steps}")

    def train_usage() -> dict:
        return next(s for s in usage(cli, "latest")["runs"][0]["stages"] if s["name"] == "train")

    # COMPLETED comes from the task's marker, written just before its process exits; the local driver
    # records the attempt (and its CPU time) once it has reaped it
    wait_for(lambda: train_usage()["cpu_used_hours"] > 0, 60, "the local driver to record the ended attempt")
    train = train_usage()
    assert train["tasks"] == 1 and train["elapsed_s"] > 1 and train["cpu_used_hours"] > 0
    assert 0 < train["mem_efficiency"] < 1  # peak RSS of the task's processes / its --mem


@pytest.mark.extended  # ~1-2 min (accelerate + TRL); the CI tier checks TRL's progress in test_align_serve's demo
def test_alignment_progress_through_trl(cli, cpu_python, tmp_path):
    """SFT (TRL through accelerate) writes the same file from the world's process zero: the final record
    names the last step, TRL's token count (input_ids gathered over processes) and the last checkpoint."""
    from chat_model_helper import make_chat_model

    model = make_chat_model(cpu_python, tmp_path / "model")
    subprocess.run([str(cpu_python), "-m", "jobs.demo.chat", str(tmp_path / "chat"), "--sft", "32", "--dpo", "8"],
                   check=True, capture_output=True, timeout=120)
    cli("run", "pipeline=align", "cluster=local", "~pipeline.stages.dpo", "~pipeline.stages.serve",
        "~pipeline.stages.smoke", f"pipeline.vars.model={model}", f"pipeline.vars.sft_data={tmp_path}/chat/sft.jsonl",
        f"pipeline.vars.dpo_data={tmp_path}/chat/dpo.jsonl", "pipeline.vars.steps=4",
        "pipeline.stages.sft.align.checkpoint_every_steps=2", "pipeline.stages.sft.align.micro_batch=2",
        "pipeline.stages.sft.align.chat_template=builtin")  # the built-in one marks the assistant turns
    assert cli.wait(timeout=300)["state"] == "COMPLETED"
    rec = read_progress(layout.progress_path(cli.run_dir(), "sft", 0))
    assert rec["step"] == rec["total_steps"] == 4 and rec["first_step"] == 0 and rec["tokens"] > 0
    assert isinstance(rec["loss"], float) and rec["last_checkpoint"].endswith("checkpoint-4")
