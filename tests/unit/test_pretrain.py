"""kind=pretrain on the login side: the layout arithmetic, each rule's error naming its key with a
valid setting nearby, token budgets, parameter counts and the plan summary."""
import json

import pytest

from launcher import kinds
from launcher.kinds import pretrain
from launcher.config.compose import compose, sweep_points
from launcher.errors import ConfigErrors
from launcher.plan.model import build_plan

GPU = ["pipeline=pretrain", "cluster=local", "pipeline.vars.data=/data/tok", "pipeline.vars.tokenizer=/data/tok.json"]
T = "pipeline.stages.train.train"


def plan_of(*overrides, base=GPU, multirun=False):
    points = sweep_points([*base, *overrides], multirun)
    return build_plan([compose(p) for p in points], points)


def errors_of(*overrides, base=GPU):
    with pytest.raises(ConfigErrors) as e:
        plan_of(*overrides, base=base)
    return {x.key: x.message for x in e.value.errors if x.stage == "train"}


def test_a_valid_nanotron_layout_plans():
    plan = plan_of("model=1b", "pipeline.vars.nodes=2", "pipeline.vars.dp=4",
                   "pipeline.stages.train.train.parallelism.tp=2", "pipeline.stages.train.train.parallelism.pp=2")
    train = plan.stages["train"].payloads[0]["train"]
    assert pretrain.world(train["parallelism"]) == 16
    assert plan.stages["convert"].deps[0].kind == "afterany"


@pytest.mark.parametrize("overrides, key, words", [
    (["pipeline.vars.dp=3"], f"{T}.parallelism.dp", ["= 3 but the stage has 1 node(s) x 8 GPU(s) = 8", "try dp=8"]),
    (["pipeline.vars.dp=2", f"{T}.parallelism.tp=4", "pipeline.vars.nodes=2"], f"{T}.parallelism.dp",
     ["try dp=4"]),
    (["model=7b", "pipeline.vars.dp=1", f"{T}.parallelism.tp=8", "model.num_heads=20", "model.num_kv_heads=20",
      "model.hidden_size=2560"], f"{T}.parallelism.tp", ["must divide num_heads (20)", "nearest valid: tp=4"]),
    (["model=1b", "model.num_kv_heads=2", "pipeline.vars.dp=2", f"{T}.parallelism.tp=4"], f"{T}.parallelism.tp",
     ["num_kv_heads (2)", "nearest valid: tp=2"]),
    (["model=tiny", "model.vocab_size=4096", "pipeline.vars.dp=2", f"{T}.parallelism.pp=4"],
     f"{T}.parallelism.pp", ["more pipeline stages than layers (2)", "nearest valid: pp=2"]),
    (["pipeline.vars.dp=2", f"{T}.parallelism.cp=4", f"{T}.seq_len=2046", "model=1b"], f"{T}.parallelism.cp",
     ["not divisible by cp=4", "nearest valid: cp=2"]),
    (["model=moe", f"{T}.parallelism.ep=2", "pipeline.vars.dp=8"], f"{T}.parallelism.ep", ["only ep=1 runs"]),
    (["model=100m"], f"{T}.model.vocab_size", ["needs the vocabulary size"]),
    (["model=1b", "pipeline.vars.checkpoint_every_tokens=1000000000"], f"{T}.checkpoint_every_tokens",
     ["not a whole number of steps of 524288 tokens", "nearest: 999817216"]),
    (["model=1b", "pipeline.vars.tokens=1000"], f"{T}.tokens", ["less than one step"]),
    (["model=1b", "pipeline.stages.train.resources.gpus_per_node=0", "pipeline.vars.dp=1"],
     "pipeline.stages.train.resources.gpus_per_node", ["needs GPUs"]),
    (["model=1b", "model.num_kv_heads=5"], f"{T}.model.num_kv_heads", ["not a multiple", "try 4"]),
])
def test_each_invalid_layout_names_its_key_and_a_valid_setting(overrides, key, words):
    errors = errors_of(*overrides)
    assert key in errors, errors
    for w in words:
        assert w in errors[key], errors[key]


def test_hf_backend_is_data_parallel_only():
    errors = errors_of(f"{T}.parallelism.tp=2", "pipeline.stages.train.resources.gpus_per_node=2",
                       base=["pipeline=ablation", "cluster=local"])
    assert "backend=hf is data parallel only" in errors[f"{T}.parallelism.tp"]
    assert "dp must be nodes x gpus_per_node = 1 x 2 = 2 (got 1)" in errors[f"{T}.parallelism.dp"]


def test_hf_backend_data_parallel_layouts():
    """dp processes, dp/nodes per node (one per GPU where there are GPUs); torchrun on every node."""
    errors = errors_of(f"{T}.parallelism.dp=3", "pipeline.stages.train.resources.nodes=2",
                       base=["pipeline=ablation", "cluster=local"])
    assert "dp=3 is not a multiple of nodes=2" in errors[f"{T}.parallelism.dp"]
    p = plan_of(f"{T}.parallelism.dp=2", base=["pipeline=ablation", "cluster=local"])
    st = p.stages["train"]
    assert kinds.get("pretrain").multi_process(st.payloads[0])
    assert pretrain.hf_processes_per_node(st.payloads[0]["train"]["parallelism"], st.resources) == 2
    one = plan_of(base=["pipeline=ablation", "cluster=local"]).stages["train"]
    # the global batch counts every replica
    assert pretrain.schedule(st.payloads[0]["train"])["tokens_per_step"] == \
        2 * pretrain.schedule(one.payloads[0]["train"])["tokens_per_step"]
    assert not kinds.get("pretrain").multi_process(one.payloads[0])  # dp=1: in-process, as before


def test_vocab_size_is_checked_against_a_tokenizer_file(tmp_path):
    tok = tmp_path / "tokenizer.json"
    tok.write_text(json.dumps({"model": {"vocab": {f"t{i}": i for i in range(300)}},
                               "added_tokens": [{"id": 300, "content": "<|endoftext|>"}]}))
    assert pretrain.tokenizer_size(str(tok)) == 301
    assert pretrain.tokenizer_size(str(tmp_path)) == 301  # a folder holding tokenizer.json
    assert pretrain.tokenizer_size("{input:tokenizer}/tokenizer.json") is None
    errors = errors_of("model=100m", "model.vocab_size=32000", f"pipeline.vars.tokenizer={tok}")
    assert "does not match the tokenizer's 301 tokens" in errors[f"{T}.model.vocab_size"]
    assert "set it to 301" in errors[f"{T}.model.vocab_size"]
    plan_of("model=100m", "model.vocab_size=301", f"pipeline.vars.tokenizer={tok}")


def test_placeholders_must_name_stages_the_trainer_waits_for():
    ablation = ["pipeline=ablation", "cluster=local"]
    plan_of("pipeline.stages.train.train.tokenizer='{input:clean}/tokenizer.json'", base=ablation)  # an ancestor
    errors = errors_of("pipeline.stages.train.train.tokenizer='{input:nope}/tokenizer.json'", base=ablation)
    assert "'nope' is not a stage this one waits for" in errors[f"{T}.tokenizer"]
    cfg = compose(ablation)  # (Hydra's override grammar has no quoted dict keys: edit the composed config)
    cfg["pipeline"]["stages"]["train"]["train"]["data"] = [{"folder": "{input}", "weight": 1.0}]
    with pytest.raises(ConfigErrors) as e:
        build_plan([cfg], [ablation])
    assert any(x.key == f"{T}.data.0.folder" and "{input} needs exactly one stage in `after` (has 2)" in x.message
               for x in e.value.errors)


def test_parameter_counts_match_the_published_sizes():
    def params(**m):
        return pretrain.param_count({"num_experts": 0, "experts_top_k": 2, "moe_intermediate_size": None, **m},
                                    m["vocab_size"])["total"]
    # Llama-2-7B: 6.74B; Llama-3.2-1B: 1.24B (tied embeddings)
    assert abs(params(hidden_size=4096, intermediate_size=11008, num_layers=32, num_heads=32, num_kv_heads=32,
                      vocab_size=32000, tie_embeddings=False) - 6.738e9) < 0.01e9
    assert abs(params(hidden_size=2048, intermediate_size=8192, num_layers=16, num_heads=32, num_kv_heads=8,
                      vocab_size=128256, tie_embeddings=True) - 1.236e9) < 0.01e9


def test_plan_summary_reports_layout_tokens_per_step_and_gpu_hours():
    plan = plan_of("model=1b", "pipeline.vars.nodes=2", "pipeline.vars.dp=16")
    train = plan.stages["train"].payloads[0]["train"]
    est = pretrain.estimate(train, plan.cluster)
    assert est["tokens_per_step"] == 16 * 4 * 8 * 2048
    assert est["steps"] == train["tokens"] // est["tokens_per_step"]
    # 6 * 1.24e9 params * 20.97e9 tokens / (989e12 * 0.35) / 3600 s
    assert est["gpu_hours"] == pytest.approx(6 * est["active_params"] * train["tokens"] / (989e12 * 0.35) / 3600)
    text = pretrain.describe("train", train, plan.stages["train"].resources, est)
    assert "dp=16 tp=1 pp=1 cp=1 ep=1 on 2 node(s) x 8 GPU(s)" in text
    assert "1,048,576 tokens/step" in text and "GPU-hours" in text


def test_moe_active_parameters_are_fewer_than_total():
    plan = plan_of("model=moe")
    est = pretrain.estimate(plan.stages["train"].payloads[0]["train"], plan.cluster)
    assert est["active_params"] < est["params"]


def test_sweep_over_data_and_seed_is_one_array_per_stage_with_aftercorr():
    plan = plan_of("data=fineweb_like,raw", "seed=1,2", base=["pipeline=ablation", "cluster=local"], multirun=True)
    train = plan.stages["train"]
    assert train.total_tasks == 4 and train.points == 4
    assert {d.parent: d.kind for d in train.deps} == {"merge": "aftercorr", "tokenizer": "aftercorr"}
    seeds = [p["train"]["seed"] for p in train.payloads]
    assert seeds == [1, 2, 1, 2]
    assert train.payloads[0]["train"]["checkpoint_every_tokens"] == 65536


def test_a_sweep_cannot_change_how_training_is_launched():
    with pytest.raises(ConfigErrors) as e:
        plan_of("pipeline.stages.train.train.backend=hf,nanotron", base=["pipeline=ablation", "cluster=local"],
                multirun=True)
    assert any(x.key == f"{T}.backend" and "differs between sweep points" in x.message for x in e.value.errors)
