"""kind=align beyond DPO on the login side: trainer reward, grpo and rloo (conf/pipeline/rlhf.yaml). The
checks each bad input names its stage and key for (the reward list, num_generations against the
generation batch, a reward model that is not a reward stage's output, options another trainer reads),
the data-format check of prompt-only lines, a reward model folder given as a path, the callables
preflight resolves in the stage's environment, and the node's own resolution of them."""
import json
from pathlib import Path

import pytest

from jobs.adapters import trl as align_train
from launcher.config.compose import compose, sweep_points
from launcher.errors import ConfigErrors
from launcher.kinds import align
from launcher.plan.model import build_plan

ROOT = Path(__file__).resolve().parents[2]
RLHF = ["pipeline=rlhf", "cluster=local", "pipeline.vars.model=/m", "pipeline.vars.pairs=/p.jsonl",
        "pipeline.vars.prompts=/q.jsonl"]
S = "pipeline.stages"
G = f"{S}.grpo.align"


def plan_of(*overrides):
    points = sweep_points([*RLHF, *overrides], False)
    return build_plan([compose(p) for p in points], points)


def errors_of(*overrides):
    with pytest.raises(ConfigErrors) as e:
        plan_of(*overrides)
    return {(x.stage, x.key): x.message for x in e.value.errors}


def test_the_rlhf_pipeline_plans_a_reward_model_then_grpo_with_it():
    plan = plan_of()
    assert [(d.parent, d.kind) for d in plan.stages["grpo"].deps] == [("reward", "afterok")]
    a = plan.stages["grpo"].payloads[0]["align"]
    assert a["rewards"] == [{"model": "{input:reward}/model"}, {"callable": "jobs.demo.rewards:brevity"}]
    # the callable is resolved in the stage's environment, with the trainer's classes
    targets = dict(align.targets("grpo", plan.stages["grpo"].payloads[0]))
    assert targets[f"{G}.rewards.1.callable"] == "jobs.demo.rewards:brevity"
    assert targets[f"{G}.trainer"] == "trl.GRPOTrainer"
    assert dict(align.targets("reward", plan.stages["reward"].payloads[0]))[f"{S}.reward.align.trainer"] == \
        "trl.RewardTrainer"


@pytest.mark.parametrize("overrides, key, words", [
    ([f"{G}.trainer=grop"], f"{G}.trainer", ["unknown trainer 'grop'", "did you mean 'grpo'"]),
    ([f"{G}.rewards=[]"], f"{G}.rewards", ["trainer grpo needs at least one reward function", "callable"]),
    ([f"{G}.trainer=rloo", f"{G}.rewards=[]"], f"{G}.rewards", ["trainer rloo needs at least one reward"]),
    ([f"{G}.num_generations=1"], f"{G}.num_generations", ["must be >= 2", "got 1"]),
    # 16 completions per step (micro_batch 16) do not split into groups of 3
    ([f"{G}.num_generations=3"], f"{G}.num_generations", ["= 16)", "multiple of 3"]),
    ([f"{G}.num_generations=4", f"{G}.micro_batch=6"], f"{G}.num_generations", ["= 6)", "multiple of 4"]),
    ([f"{G}.max_completion_length=0"], f"{G}.max_completion_length", ["must be >= 1"]),
    ([f"{S}.reward.align.trainer=sft", f"{S}.reward.align.data=/s.jsonl"], f"{G}.rewards.0.model",
     ["'reward' is kind=align trainer=sft, not a reward model", "trainer: reward"]),
    (["pipeline.vars.gpus=1", f"{S}.reward.align.lora.enabled=true", f"{S}.reward.align.lora.qlora=true"],
     f"{G}.rewards.0.model", ["'reward' trains QLoRA adapters and saves only them"]),
    ([f"{G}.rewards=[{{callable: jobs.demo.rewards.brevity}}]"], f"{G}.rewards.0.callable",
     ["'jobs.demo.rewards.brevity' is not 'package.module:function'"]),
    ([f"{G}.rewards=[{{model: /r, callable: 'a:b'}}]"], f"{G}.rewards.0", ["(one key)"]),
    ([f"{G}.rewards=[{{function: 'a:b'}}]"], f"{G}.rewards.0", ["(one key)"]),
    ([f"{G}.rewards=[{{model: '{{input:nowhere}}/model'}}]"], f"{G}.rewards.0.model",
     ["'nowhere' is not a stage this one waits for"]),
    # options another trainer reads would be dropped silently
    ([f"{G}.max_length=64"], f"{G}.max_length", ["only align.trainer=dpo/sft/reward reads it", "trainer=grpo"]),
    ([f"{S}.reward.align.num_generations=8"], f"{S}.reward.align.num_generations",
     ["only align.trainer=grpo/rloo reads it"]),
    ([f"{S}.reward.align.beta=0.5"], f"{S}.reward.align.beta", ["only align.trainer=dpo reads it"]),
    # the EMA of the weights
    ([f"{G}.ema.decay=1.0"], f"{G}.ema.decay", ["must be a number in (0, 1) or null, got 1.0"]),
    ([f"{S}.reward.align.ema.decay=0"], f"{S}.reward.align.ema.decay", ["in (0, 1)"]),
    ([f"{G}.ema.decay=0.99", f"{G}.lora.enabled=true"], f"{G}.ema.decay", ["with LoRA only the adapters train"]),
    (["pipeline.vars.gpus=4", f"{G}.ema.decay=0.99", f"{G}.deepspeed_zero=3"], f"{G}.ema.decay",
     ["ZeRO-3 shards the weights"]),
])
def test_each_bad_input_names_its_stage_and_key(overrides, key, words):
    errs = errors_of(*overrides)
    stage = key.split(".")[2]
    assert (stage, key) in errs, errs
    for w in words:
        assert w in errs[(stage, key)], errs[(stage, key)]


def test_evaluating_a_reward_model_is_refused_and_evaluating_grpo_is_not():
    demo = ["pipeline=demo", "cluster=local"]
    with pytest.raises(ConfigErrors) as e:
        build_plan(*(lambda pts: ([compose(p) for p in pts], pts))(sweep_points(
            [*demo, f"~{S}.evaluate_aligned.after.dpo", f"+{S}.evaluate_aligned.after.reward=afterok"], False)))
    msg = {(x.stage, x.key): x.message for x in e.value.errors}[("evaluate_aligned", f"{S}.evaluate_aligned.after")]
    assert "not trainer: reward" in msg
    pts = sweep_points([*demo, f"~{S}.evaluate_aligned.after.dpo", f"+{S}.evaluate_aligned.after.grpo=afterok"], False)
    build_plan([compose(p) for p in pts], pts)


def test_a_reward_model_given_as_a_plain_path_or_a_reward_stage_plans():
    plan_of(f"{G}.rewards=[{{model: /shared/rm}}]")
    plan_of(f"{G}.trainer=rloo", f"{G}.micro_batch=2", f"{G}.num_generations=2")
    plan_of(f"{S}.reward.align.max_length=64")  # the reward trainer reads max_length
    plan_of(f"{G}.ema.decay=0.99", f"{S}.reward.align.ema.decay=0.5")
    plan_of("pipeline.vars.gpus=4", f"{G}.ema.decay=0.99", f"{G}.deepspeed_zero=2")


def test_prompt_only_lines_for_grpo_and_rloo(tmp_path):
    f = tmp_path / "q.jsonl"
    msgs = [{"role": "user", "content": "Complete the sentence: The"}]
    for trainer in ("grpo", "rloo"):
        f.write_text(json.dumps({"prompt": msgs}) + "\n" + json.dumps({"prompt": "plain text"}) + "\n")
        assert align.data_problem(str(f), trainer) == ""
        f.write_text(json.dumps({"messages": msgs}) + "\n")
        msg = align.data_problem(str(f), trainer)
        assert f"line 1 has no prompt; trainer {trainer} reads lines like" in msg and '{"prompt": "text"}' in msg
        f.write_text(json.dumps({"prompt": msgs}) + "\n" + json.dumps({"prompt": ""}) + "\n")
        assert "line 2: 'prompt' must be a non-empty list of messages or a string" in align.data_problem(str(f), trainer)
        f.write_text(json.dumps({"prompt": [{"content": "no role"}]}) + "\n")
        assert "line 1: 'prompt' message 0 must be" in align.data_problem(str(f), trainer)


def test_preference_pairs_for_the_reward_trainer_with_or_without_a_prompt(tmp_path):
    f = tmp_path / "p.jsonl"
    pair = {"chosen": [{"role": "assistant", "content": "a"}], "rejected": "b"}
    f.write_text(json.dumps(pair) + "\n" + json.dumps({"prompt": "q", **pair}) + "\n")
    assert align.data_problem(str(f), "reward") == ""
    f.write_text(json.dumps({"prompt": "q", "chosen": "a"}) + "\n")
    assert "line 1 has no rejected; trainer reward reads lines like" in align.data_problem(str(f), "reward")


def test_a_reward_model_path_must_hold_a_sequence_classifier(tmp_path):
    payload = {"align": {"trainer": "grpo"}}
    key = f"{G}.rewards.0.model"
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    msg = align.local_input_problem(key, str(tmp_path), payload)
    assert "is not a reward model" in msg and "trainer: reward" in msg
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForSequenceClassification"],
                                                      "id2label": {"0": "LABEL_0", "1": "LABEL_1"}}))
    assert "2 label(s)" in align.local_input_problem(key, str(tmp_path), payload)
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForSequenceClassification"],
                                                      "id2label": {"0": "LABEL_0"}}))
    assert align.local_input_problem(key, str(tmp_path), payload) == ""
    # the policy's own model folder is not held to it
    assert align.local_input_problem(f"{G}.model", str(tmp_path), payload) == ""


def test_the_node_resolves_callables_and_names_the_key_of_one_that_does_not():
    a = {"trainer": "grpo", "rewards": [{"model": "/r/model"}, {"callable": "jobs.demo.rewards:brevity"}]}
    model, fn = align_train.reward_funcs(a)
    assert model == "/r/model" and fn(["", "x" * 128]) == [1.0, 0.5]
    with pytest.raises(ValueError, match=r"align.rewards.1.callable: 'jobs.demo.rewards:nothing' does not resolve"):
        align_train.reward_funcs({**a, "rewards": [a["rewards"][0], {"callable": "jobs.demo.rewards:nothing"}]})
    with pytest.raises(ValueError, match="align.rewards.0.callable: 'jobs.demo.rewards:__doc__' is not a function"):
        align_train.reward_funcs({**a, "rewards": [{"callable": "jobs.demo.rewards:__doc__"}]})


CPU_PYTHON = ROOT / ".envs" / "cpu" / "bin" / "python"


def test_preflight_resolves_each_callable_in_the_stage_environment():
    if not CPU_PYTHON.exists():
        pytest.skip("the cpu environment (trl) is not built")
    from launcher.plan.preflight import check_environments

    plan = plan_of(f"{G}.rewards=[{{model: '{{input:reward}}/model'}}, {{callable: 'jobs.demo.rewards:brevity'}}, "
                   f"{{callable: 'jobs.demo.rewards:no_such_reward'}}, {{callable: 'no_such_pkg.mod:f'}}]")
    errs = {(e.stage, e.key): e.message for e in check_environments(plan)}
    assert set(errs) == {("grpo", f"{G}.rewards.2.callable"), ("grpo", f"{G}.rewards.3.callable")}, errs
    assert "no_such_reward" in errs[("grpo", f"{G}.rewards.2.callable")]
    assert "no_such_pkg" in errs[("grpo", f"{G}.rewards.3.callable")]
