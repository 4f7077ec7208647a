"""Checkpoint retention on the real dev Slurm: a two-seed train + evaluate sweep with keep_last 2 ends with
the 2 newest checkpoints per run, and every checkpoint of every run was scored exactly once (the
evaluation follows training as separate jobs: the training must not remove what it has not scored)."""
from __future__ import annotations

import json
import subprocess

import pytest

from jobs import layout

from conftest import ROOT

pytestmark = pytest.mark.slow


def test_keep_last_2_on_slurm_ends_with_2_checkpoints_per_run_each_scored_once(dcli, cpu_python, tmp_path):
    data = tmp_path / "data"
    subprocess.run([str(cpu_python), str(ROOT / "tests" / "integration" / "hf_train_helper.py"), "data", str(data)],
                   check=True, capture_output=True, timeout=600)
    info = json.loads((data / "data.json").read_text())
    # 1,024 tokens per step (micro_batch 8 x seq_len 128): 32 steps, a checkpoint every 8 (4 per run)
    dcli("run", "-m", "pipeline=train", "cluster=dev", "seed=1,2", f"pipeline.vars.data={info['a']}",
         f"pipeline.vars.tokenizer={info['tokenizer']}", "pipeline.vars.tokens=32768",
         "pipeline.vars.checkpoint_every_tokens=8192", "pipeline.stages.train.retention.keep_last=2",
         "pipeline.stages.evaluate.evaluate.poll_s=2", "pipeline.stages.evaluate.evaluate.max_samples=20")
    st = dcli.wait(timeout=900)
    assert st["state"] == "COMPLETED", st
    run = dcli.run_dir()
    for point in (0, 1):
        kept = sorted(p.name for p in layout.checkpoint_dir(run, "train", point).iterdir())
        assert kept == ["checkpoint-24", "checkpoint-32"], (point, kept)
        scored = sorted(p.name for p in (layout.stage_dir(run, "evaluate") / "evals" / str(point)).glob("step-*.json"))
        assert scored == sorted(f"step-{s}.json" for s in (8, 16, 24, 32)), (point, scored)
        result = json.loads((layout.output_dir(run, "evaluate", point, 0) / "result.json").read_text())
        assert result["steps"] == [8, 16, 24, 32], result
