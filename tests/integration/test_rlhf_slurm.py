"""RLHF beyond DPO on the real dev Slurm: conf/pipeline/rlhf.yaml (reward model -> GRPO) on the tiny chat
model, GRPO force-requeued (`scontrol requeue`, as a preemption would, without warning) once its first
checkpoint is marked complete: it resumes from a checkpoint, ends COMPLETED at its last step, and its
reward is logged at every step across both attempts (the log history comes back with the checkpoint).
The rise of the reward itself is asserted by the local test (tests/integration/test_rlhf_local.py),
on the same seeded numbers without the requeue."""
from __future__ import annotations

import json
import subprocess

import pytest

from jobs import layout
from conftest import CLI, ROOT, job_of, slurm, wait_for
from chat_model_helper import make_chat_model

pytestmark = pytest.mark.slow

STEPS = 32  # ~2 s a step here: the requeue lands between checkpoint-4 and the end


def test_grpo_requeued_once_resumes_from_its_checkpoint(tmp_path_factory, dev_slurm, cpu_python):
    data = tmp_path_factory.mktemp("rlhf")
    model = make_chat_model(cpu_python, data / "model")
    subprocess.run([str(cpu_python), "-m", "jobs.demo.chat", str(data / "chat"), "--sft", "8", "--dpo", "64"],
                   check=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT)}, capture_output=True)
    dcli = CLI(tmp_path_factory.mktemp("runs"), env=dev_slurm)
    dcli("run", "pipeline=rlhf", "cluster=dev", f"pipeline.vars.model={model}",
         f"pipeline.vars.pairs={data}/chat/dpo.jsonl", f"pipeline.vars.prompts={data}/chat/prompts.jsonl",
         "pipeline.vars.reward_steps=4", f"pipeline.vars.grpo_steps={STEPS}", timeout=600)
    run = dcli.run_dir()
    first = layout.checkpoint_dir(run, "grpo", 0) / "checkpoint-4" / "launcher-complete.json"
    wait_for(first.exists, 1500, "GRPO's first checkpoint")
    slurm(dev_slurm, "scontrol", "requeue", f"{job_of(dcli, 'grpo')}_0")
    st = dcli.wait(timeout=1800, poll=5)
    assert st["state"] == "COMPLETED", st
    grpo = json.loads((run / "stages/grpo/out/0/0/result.json").read_text())
    assert grpo["resumed_from"] is not None and 4 <= grpo["resumed_from"] < STEPS, grpo
    assert grpo["final_step"] == STEPS
    assert [s for s, _ in grpo["rewards"]] == list(range(1, STEPS + 1))
    p = dcli("logs", run.name, "grpo")
    log = p.stdout + p.stderr
    assert "resuming from checkpoint-" in log and "(attempt 2)" in log, log[-3000:]
