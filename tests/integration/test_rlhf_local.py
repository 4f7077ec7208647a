"""RLHF beyond DPO on the local backend (cluster=local), with the real TRL on the tiny chat model made
here (jobs/demo/tiny_model.py) and the demo's chat data (jobs/demo/chat.py): conf/pipeline/rlhf.yaml,
a reward model (TRL RewardTrainer on the DPO pairs) then GRPO scored by that reward model and a Python
function (jobs.demo.rewards:brevity).

What is asserted, and why: both stages COMPLETED; the reward model folder loads, in the stage
environment's python, as a sequence classifier with one label and scores a chosen answer; GRPO
logged the mean reward of its completions at every step, and each reward function's own mean; the
reward rose (the mean of the last 4 logged steps over the first 4's). The last is seeded (seed 0,
on CPU: the same numbers on every run here), with a reward that is easy to improve (brevity: shorter
tokens pay, on a model that never ends early) and lr 1e-2: over 16 steps it went 2.61 -> 2.79 (the
mean of 4). GRPO keeps an EMA of its weights (align.ema.decay): each checkpoint and the output have
it, loadable, and different from the trained weights. ~2.5 min on 2 shared cores."""
from __future__ import annotations

import json
import subprocess

import pytest
from chat_model_helper import make_chat_model
from conftest import ROOT


@pytest.mark.extended  # ~1 min; CI runs reward model -> GRPO on the dev cluster (the demo) and GRPO's requeue (test_rlhf_slurm)
def test_reward_model_then_grpo_with_it_on_the_tiny_model(cli, cpu_python, tmp_path):
    model = make_chat_model(cpu_python, tmp_path / "model")
    chat = tmp_path / "chat"
    subprocess.run([str(cpu_python), "-m", "jobs.demo.chat", str(chat), "--sft", "8", "--dpo", "64"], check=True,
                   cwd=ROOT, env={"PYTHONPATH": str(ROOT)}, capture_output=True)
    p = cli("run", "pipeline=rlhf", "cluster=local", "wait=true", "poll_s=2", f"pipeline.vars.model={model}",
            f"pipeline.vars.pairs={chat}/dpo.jsonl", f"pipeline.vars.prompts={chat}/prompts.jsonl",
            "pipeline.vars.reward_steps=4", "pipeline.stages.grpo.align.ema.decay=0.9", timeout=600)
    st = cli.status()
    assert st["state"] == "COMPLETED" and all(s["state"] == "COMPLETED" for s in st["stages"]), p.stdout[-3000:]
    run = cli.run_dir()

    reward = json.loads((run / "stages/reward/out/0/0/result.json").read_text())
    assert reward["trainer"] == "reward" and reward["final_step"] == 4 and reward["final_accuracy"] is not None
    code = ("import sys, json, torch; from transformers import AutoModelForSequenceClassification, AutoTokenizer\n"
            "m = AutoModelForSequenceClassification.from_pretrained(sys.argv[1]); t = AutoTokenizer.from_pretrained(sys.argv[1])\n"
            "x = t.apply_chat_template([{'role': 'user', 'content': 'Complete the sentence: The'}, "
            "{'role': 'assistant', 'content': 'The end.'}], tokenize=True, return_tensors='pt', return_dict=True)\n"
            "print(json.dumps([type(m).__name__, m.config.num_labels, list(m(**x).logits.shape)]))")
    out = subprocess.run([str(cpu_python), "-c", code, reward["model_dir"]], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    name, labels, shape = json.loads(out.stdout.strip().splitlines()[-1])
    assert name.endswith("ForSequenceClassification") and labels == 1 and shape == [1, 1]

    grpo = json.loads((run / "stages/grpo/out/0/0/result.json").read_text())
    assert grpo["trainer"] == "grpo" and grpo["final_step"] == 16
    assert [s for s, _ in grpo["rewards"]] == list(range(1, 17))  # logged at every step
    assert set(grpo["reward_functions"]) == {"model", "brevity"}
    assert all(len(v) == 16 for v in grpo["reward_functions"].values())
    first, last = [sum(r for _, r in grpo["rewards"][i]) / 4 for i in (slice(0, 4), slice(-4, None))]
    assert last > first, grpo["rewards"]

    # the EMA of GRPO's weights: beside every checkpoint (averaged over its steps) and the output
    assert grpo["checkpoints"] == [4, 8, 12, 16] and grpo["ema"]["steps"] == 16
    ckpt = run / "stages/grpo/ckpt/0"
    for n in grpo["checkpoints"]:
        state = json.loads((ckpt / f"checkpoint-{n}" / "ema" / "ema.json").read_text())
        assert state == {"decay": 0.9, "steps": n}
    code = ("import sys, json, torch; from transformers import AutoModelForCausalLM\n"
            "e, m = (AutoModelForCausalLM.from_pretrained(p) for p in sys.argv[1:])\n"
            "print(max((a - b).abs().max().item() for a, b in zip(e.parameters(), m.parameters())))")
    out = subprocess.run([str(cpu_python), "-c", code, grpo["ema"]["model_dir"], grpo["model_dir"]],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert float(out.stdout.strip().splitlines()[-1]) > 0  # an average, not a copy of the last weights
