"""On cluster=local: checkpoint retention (jobs/runtime/retention.py) in a train + evaluate pipeline, and
`launcher gc` (launcher/run/gc.py) on a run root with a cancelled run and an old cache entry."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from jobs import layout




def test_keep_last_2_ends_with_2_checkpoints_and_every_checkpoint_scored_once(cli, tokenized):
    """10 steps, a checkpoint every 2 (5 in all), keep_last 2, an evaluation following the training:
    the training prunes only what the evaluation scored, the evaluation prunes after each score; at the
    end the 2 newest stay and all 5 were scored, each once."""
    t, e = "pipeline.stages.train", "pipeline.stages.evaluate"
    cli("run", "pipeline=train", "cluster=local", "model=tiny", "wait=true", "poll_s=0.5",
        f"pipeline.vars.data={tokenized['a']}", f"pipeline.vars.tokenizer={tokenized['tokenizer']}",
        f"{t}.train.seq_len=32", f"{t}.train.micro_batch=2", f"{t}.train.log_every_steps=2",
        f"{t}.train.optimizer.warmup_steps=2",
        "pipeline.vars.tokens=640", "pipeline.vars.checkpoint_every_tokens=128", f"{t}.retention.keep_last=2",
        f"{e}.evaluate.poll_s=0.5", f"{e}.evaluate.max_samples=4", timeout=900)
    st = cli.status()
    run_dir = cli.run_dir()
    logs = "".join(p.stdout + p.stderr for p in (cli("logs", "latest", s, check=False) for s in ("train", "evaluate")))
    assert st["state"] == "COMPLETED", (st, logs[-4000:])
    ckpt = layout.checkpoint_dir(run_dir, "train", 0)
    assert sorted(p.name for p in ckpt.iterdir()) == ["checkpoint-10", "checkpoint-8"], logs[-4000:]
    evals = layout.stage_dir(run_dir, "evaluate") / "evals" / "0"
    assert sorted(p.name for p in evals.glob("step-*.json")) == [f"step-{s}.json" for s in (10, 2, 4, 6, 8)]
    result = json.loads((layout.output_dir(run_dir, "evaluate", 0, 0) / "result.json").read_text())
    assert result["steps"] == [2, 4, 6, 8, 10], result
    assert logs.count("scored in") == 5, logs[-4000:]  # each checkpoint scored once
    assert "retention: removed checkpoint(s)" in logs


def _age(run_dir: Path, days: float) -> None:
    """Make a run `days` old (run.json `created`, what gc reads)."""
    import time

    meta = json.loads((run_dir / "run.json").read_text())
    meta["created"] = time.time() - days * 86400
    layout.atomic_write_json(run_dir / "run.json", meta)


def _lines(p) -> list:
    return [x.split("\t") for x in p.stdout.splitlines() if "\t" in x]


def test_gc_dry_run_then_gc_frees_exactly_the_old_cache_entry_and_the_cancelled_runs_partial_attempt(cli):
    from conftest import wait_for

    from launcher.run.gc import size

    cli("run", "pipeline=smoke", "cluster=local", "wait=true", "poll_s=0.3")
    old = cli.run_dir()
    _age(old, 40)
    # a second run that computes everything itself (no cache reference to the first), slow enough to cancel
    cli("run", "--rerun", "shards", "pipeline=smoke", "cluster=local", "pipeline.stages.checkpointing.params.step_s=1")
    live = cli.run_dir()
    assert live != old
    wait_for(lambda: cli.status(live.name)["stages"][-1]["state"] == "RUNNING", 120, "checkpointing to run")
    _age(live, 40)  # old, but running: gc must not touch it
    p = cli("gc", "--dry-run")
    assert [x[3] for x in _lines(p)] == [str(old)], p.stdout
    assert f"{live}: old, but a task of it is queued or running: kept" in p.stdout
    cli("cancel", live.name)
    wait_for(lambda: cli.status(live.name)["state"] not in ("RUNNING", "PENDING"), 60, "the cancel to end the task")
    _age(live, 0)
    # what a SIGKILLed attempt leaves (the task removes its own on a clean stop): an unfinished output folder
    partial = layout.output_dir(live, "checkpointing", 0) / ".0.partial-99-0"
    partial.mkdir(parents=True)
    (partial / "count.txt").write_text("7\n" * 1000)
    expect = {str(old): size(old), str(partial): size(partial)}
    p = cli("gc", "--dry-run")
    got = {x[3]: int(x[1]) for x in _lines(p)}
    assert got == expect and all(x[0] == "would free" for x in _lines(p)), p.stdout
    assert f"total: would free {sum(expect.values())} bytes" in p.stdout
    assert old.exists() and partial.exists()  # a dry run removes nothing
    p = cli("gc")
    assert {x[3]: int(x[1]) for x in _lines(p)} == expect and all(x[0] == "freed" for x in _lines(p)), p.stdout
    assert f"total: freed {sum(expect.values())} bytes" in p.stdout
    assert not old.exists() and not partial.exists()
    assert (live / "run.json").exists() and cli.status(live.name)["stages"][0]["state"] == "COMPLETED"
    assert [p.name for p in cli.run_root.iterdir() if p.name.startswith(".gc-")] == []
    p = cli("gc")
    assert "total: freed 0 bytes" in p.stdout, p.stdout


@pytest.mark.extended  # ~1-2 min (accelerate + TRL)
def test_align_keeps_the_newest_checkpoint_with_keep_last_1(cli, cpu_python, tmp_path):
    """kind=align prunes in its TRL worker (jobs/adapters/trl.py) after each marked checkpoint: 6 steps, a
    checkpoint every 2, no evaluation: only checkpoint-6 stays."""
    from chat_model_helper import make_chat_model

    model = make_chat_model(cpu_python, tmp_path / "model")
    subprocess.run([str(cpu_python), "-m", "jobs.demo.chat", str(tmp_path / "chat"), "--sft", "32", "--dpo", "8"],
                   check=True, capture_output=True, timeout=120)
    cli("run", "pipeline=align", "cluster=local", "~pipeline.stages.dpo", "~pipeline.stages.serve",
        "~pipeline.stages.smoke", f"pipeline.vars.model={model}", f"pipeline.vars.sft_data={tmp_path}/chat/sft.jsonl",
        f"pipeline.vars.dpo_data={tmp_path}/chat/dpo.jsonl", "pipeline.vars.steps=6",
        "pipeline.stages.sft.align.checkpoint_every_steps=2", "pipeline.stages.sft.align.micro_batch=2",
        "pipeline.stages.sft.align.chat_template=builtin", "pipeline.stages.sft.retention.keep_last=1")
    st = cli.wait(timeout=300)
    logs = cli("logs", "latest", "sft", check=False)
    assert st["state"] == "COMPLETED", (st, logs.stdout[-3000:], logs.stderr[-3000:])
    assert sorted(p.name for p in layout.checkpoint_dir(cli.run_dir(), "sft", 0).glob("checkpoint-*")) == ["checkpoint-6"]
    assert "retention: removed checkpoint(s) [2]" in logs.stdout + logs.stderr
