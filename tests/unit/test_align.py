"""kind=align and kind=serve on the login side: the checks (each naming its key), the accelerate config
each align task is launched with (goldens, loaded by accelerate itself when it is installed), what
the stage spec tells clients and servers, and the jsonl check preflight makes."""
import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from jobs.adapters import trl as align_train
from jobs import layout
from launcher.kinds import align
from launcher.config.compose import compose, sweep_points
from launcher.errors import ConfigErrors
from launcher.plan.model import build_plan
from launcher.plan.render import stage_spec

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "accelerate"
ALIGN = ["pipeline=align", "cluster=local", "pipeline.vars.model=/m", "pipeline.vars.sft_data=/s.jsonl",
         "pipeline.vars.dpo_data=/d.jsonl"]
S = "pipeline.stages"


def plan_of(*overrides, base=ALIGN):
    points = sweep_points([*base, *overrides], False)
    return build_plan([compose(p) for p in points], points)


def errors_of(*overrides, base=ALIGN):
    with pytest.raises(ConfigErrors) as e:
        plan_of(*overrides, base=base)
    return {(x.stage, x.key): x.message for x in e.value.errors}


def test_the_align_pipeline_plans_sft_then_dpo_then_a_server_and_its_client():
    plan = plan_of()
    assert [(d.parent, d.kind) for d in plan.stages["dpo"].deps] == [("sft", "afterok")]
    assert [(d.parent, d.kind) for d in plan.stages["smoke"].deps] == [("serve", "after")]
    spec = stage_spec(plan, plan.stages["smoke"], Path("/r"), "r1")
    assert spec["servers"] == {"serve": {"hash": plan.stages["serve"].hash, "ready_timeout_s": 600.0}}
    serve = stage_spec(plan, plan.stages["serve"], Path("/r"), "r1")
    assert serve["clients"] == {"smoke": {"hash": plan.stages["smoke"].hash, "tasks_per_point": 1}}
    # {input:sft} of an align stage is the sft task's output folder, not a datatrove folder
    dpo = stage_spec(plan, plan.stages["dpo"], Path("/r"), "r1")
    assert layout.Folders(dpo, 0).fill("{input:sft}/model") == "/r/stages/sft/out/0/0/model"


@pytest.mark.parametrize("overrides, stage, key, words", [
    ([f"{S}.sft.align.trainer=sftt"], "sft", f"{S}.sft.align.trainer", ["unknown trainer 'sftt'", "did you mean 'sft'"]),
    ([f"{S}.sft.align.data=null"], "sft", f"{S}.sft.align.data", ['{"messages"']),
    ([f"{S}.sft.align.lora.qlora=true", f"{S}.sft.align.lora.enabled=true"], "sft", f"{S}.sft.align.lora.qlora",
     ["needs a GPU"]),
    (["pipeline.vars.gpus=1", f"{S}.sft.align.lora.qlora=true"], "sft", f"{S}.sft.align.lora.qlora", ["set align.lora.enabled=true"]),
    ([f"{S}.dpo.align.deepspeed_zero=2"], "dpo", f"{S}.dpo.align.deepspeed_zero", ["DeepSpeed needs GPUs"]),
    (["pipeline.vars.gpus=4", f"{S}.dpo.align.deepspeed_zero=4"], "dpo", f"{S}.dpo.align.deepspeed_zero",
     ["ZeRO stage 1, 2 or 3"]),
    (["pipeline.vars.gpus=4", f"{S}.sft.align.nproc_per_node=8"], "sft", f"{S}.sft.align.nproc_per_node",
     ["8 process(es) per node with 4 GPU(s)"]),
    ([f"{S}.serve.serve.tensor_parallel=2"], "serve", f"{S}.serve.serve.tensor_parallel", ["without GPUs"]),
    (["pipeline.vars.gpus=2", "pipeline.vars.tensor_parallel=4"], "serve", f"{S}.serve.serve.tensor_parallel",
     ["use tensor_parallel <= 2"]),
    ([f"{S}.smoke.after.serve=afterok"], "smoke", f"{S}.smoke.after.serve", ["wait on it with `after`"]),
    ([f"{S}.serve.resources.nodes=2"], "serve", f"{S}.serve.resources.nodes", ["one server runs on one node"]),
])
def test_each_rule_names_its_stage_and_key(overrides, stage, key, words):
    base = ALIGN if "tensor_parallel=4" not in " ".join(overrides) else \
        ["pipeline=serve", "cluster=local", "pipeline.vars.model=/m"]
    errs = errors_of(*overrides, base=base)
    assert (stage, key) in errs, errs
    for w in words:
        assert w in errs[(stage, key)], errs[(stage, key)]


def test_evaluating_an_align_stage_needs_whole_model_checkpoints():
    errs = errors_of(f"{S}.dpo.align.lora.enabled=true", base=["pipeline=demo", "cluster=local"])
    assert "adapter checkpoints are not models" in errs[("evaluate_aligned", f"{S}.evaluate_aligned.after")]


def test_every_trainer_has_a_line_format_and_columns():
    assert set(align.LINE_FORMAT) == set(align_train.TRAINERS) == set(align_train.COLUMNS)


def _cfg(**over):
    a = plan_of().stages["sft"].payloads[0]["align"]
    r = dict(plan_of().stages["sft"].resources)
    for k, v in over.items():
        (r if k in r else a)[k] = v
    return align.accelerate_config(a, r)


CASES = {
    "cpu_one_process": {},
    "cpu_two_nodes": {"nodes": 2},
    "one_node_8_gpus_bf16": {"gpus_per_node": 8, "dtype": "bfloat16"},
    "two_nodes_8_gpus_zero3": {"gpus_per_node": 8, "nodes": 2, "deepspeed_zero": 3, "grad_accum": 4},
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_accelerate_config_matches_its_golden(case):
    got = yaml.safe_dump(_cfg(**CASES[case]), sort_keys=False)
    golden = GOLDEN / f"{case}.yaml"
    if os.environ.get("UPDATE_GOLDEN"):  # UPDATE_GOLDEN=1 pytest ...: rewrite, review the diff, commit
        golden.write_text(got)
    assert got == golden.read_text()


def test_accelerate_config_numbers():
    c = _cfg(gpus_per_node=8, nodes=2, deepspeed_zero=3, grad_accum=4)
    assert (c["num_machines"], c["num_processes"], c["distributed_type"]) == (2, 16, "DEEPSPEED")
    assert c["deepspeed_config"]["zero_stage"] == 3 and c["deepspeed_config"]["gradient_accumulation_steps"] == 4
    assert _cfg()["use_cpu"] is True and _cfg()["distributed_type"] == "NO" and _cfg()["num_processes"] == 1


CPU_PYTHON = ROOT / ".envs" / "cpu" / "bin" / "python"


def test_accelerate_loads_every_golden_with_its_own_config_class():
    if not CPU_PYTHON.exists():  # checked when the test runs: the integration tests build it earlier in a full run
        pytest.skip("the cpu environment (accelerate) is not built")
    code = ("import sys, json; from accelerate.commands.config.config_args import load_config_from_file\n"
            "out = {}\n"
            "for f in sys.argv[1:]:\n"
            "    c = load_config_from_file(f)\n"
            "    out[f] = [str(c.distributed_type), c.num_processes, c.num_machines]\n"
            "print(json.dumps(out))")
    files = sorted(str(f) for f in GOLDEN.glob("*.yaml"))
    p = subprocess.run([str(CPU_PYTHON), "-c", code, *files], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    got = json.loads(p.stdout.strip().splitlines()[-1])
    assert got[str(GOLDEN / "two_nodes_8_gpus_zero3.yaml")] == ["DistributedType.DEEPSPEED", 16, 2]
    assert got[str(GOLDEN / "cpu_one_process.yaml")] == ["DistributedType.NO", 1, 1]
    assert got[str(GOLDEN / "cpu_two_nodes.yaml")] == ["DistributedType.MULTI_CPU", 2, 2]


def test_preflight_reads_every_line_of_the_data(tmp_path):
    payload = {"align": {"trainer": "dpo"}}
    f = tmp_path / "d.jsonl"
    key = "pipeline.stages.dpo.align.data"
    f.write_text(json.dumps({"messages": []}) + "\n")
    msg = align.local_input_problem(key, str(f), payload)
    assert "line 1 has no prompt, chosen, rejected" in msg and '"chosen": [messages]' in msg
    good = {"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant", "content": "a"}],
            "rejected": "b"}
    f.write_text(json.dumps(good) + "\n")
    assert align.local_input_problem(key, str(f), payload) == ""
    # a broken line 5, after four good ones (and a blank line, which datasets skips too)
    f.write_text((json.dumps(good) + "\n") * 3 + "\n" + '{"prompt": "q", "chosen": \n')
    assert "line 5 is not JSON" in align.local_input_problem(key, str(f), payload)
    f.write_text((json.dumps(good) + "\n") * 4 + json.dumps({**good, "chosen": [{"content": "a"}]}) + "\n")
    assert "line 5: 'chosen' message 0 must be" in align.local_input_problem(key, str(f), payload)
    # past the size limit the node checks the rest
    assert align.data_problem(str(f), "dpo", max_bytes=len(json.dumps(good)) * 4 + 10) == ""
    f.write_text("\n")
    assert "no lines to train on" in align.local_input_problem(key, str(f), payload)
    sft = tmp_path / "s.jsonl"
    sft.write_text(json.dumps({"messages": "hello"}) + "\n")
    assert "'messages' must be a non-empty list of messages" in align.data_problem(str(sft), "sft")
    assert "not a Hugging Face model folder" in align.local_input_problem("pipeline.stages.dpo.align.model",
                                                                          str(tmp_path), payload)
