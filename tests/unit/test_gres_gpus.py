"""GPUs asked for with a typed GRES (`resources.gres: gpu:a100:4`, as sites that require --gres write it)
count as the stage's GPUs per node everywhere a kind reads them: the node side starts one process per
GPU (torchrun, nanotron, vLLM and llama.cpp read the spec's gpus_per_node), and the kinds' checks
(tensor parallelism, dp layouts) use the same count (launcher/sbatch/options.py node_gpus); the sbatch
script keeps the request as written (--gres, no --gpus-per-node)."""
from __future__ import annotations

from pathlib import Path

import pytest

from launcher.config.compose import compose
from launcher.errors import LauncherError
from launcher.plan.model import build_plan
from launcher.plan.render import build_requests, render_script, stage_spec

pytestmark = pytest.mark.unit


def plan_of(pipeline: str, *overrides):
    return build_plan([compose([f"pipeline={pipeline}", "cluster=dev", *overrides])], [[]])


def test_a_gres_gpu_request_is_the_node_sides_gpus_per_node():
    plan = plan_of("distributed", "pipeline.stages.probe.resources.gres=gpu:a100:4", "pipeline.vars.nproc_per_node=null")
    stage = plan.stages["probe"]
    spec = stage_spec(plan, stage, Path("/shared/runs/RUN"), "RUN")
    # jobs/kinds/torchrun.py: nproc_per_node = launch.nproc_per_node or resources.gpus_per_node or 1
    assert spec["resources"]["gpus_per_node"] == 4, spec["resources"]
    assert stage.resources["gpus_per_node"] == 0  # the request itself is unchanged
    req = next(r for r in build_requests(plan, {s: range(p.total_tasks) for s, p in plan.stages.items()}, 1001)
               if r.stage == "probe")
    text = render_script(plan, req, Path("/shared/runs/RUN"), "RUN")
    assert "#SBATCH --gres=gpu:a100:4\n" in text and "--gpus-per-node" not in text


def test_gpus_per_task_and_per_node_forms_count_too():
    plan = plan_of("distributed", "pipeline.stages.probe.resources.gpus_per_task=1",
                   "pipeline.stages.probe.resources.ntasks_per_node=1", "pipeline.vars.nproc_per_node=null")
    assert stage_spec(plan, plan.stages["probe"], Path("/r"), "RUN")["resources"]["gpus_per_node"] == 1
    plan = plan_of("distributed", "pipeline.stages.probe.resources.gpus_per_node=h100:2")
    assert stage_spec(plan, plan.stages["probe"], Path("/r"), "RUN")["resources"]["gpus_per_node"] == 2


def test_tensor_parallelism_is_checked_against_gres_gpus():
    """The sibling on the login side: kind=generate's tensor_parallel_size over the GPUs of a gres
    request (4 fit in gpu:4, not in gpu:2)."""
    tp4 = ["pipeline.stages.synth.resources.partition=gpu", "pipeline.stages.synth.generate.tensor_parallel_size=4",
           "pipeline.vars.model=/shared/models/chat", "cluster.environments.vllm.python=/envs/vllm/bin/python"]
    plan = plan_of("generate_demo", "pipeline.stages.synth.resources.gres=gpu:4", *tp4)
    assert plan.stages["synth"].payloads[0]["generate"]["tensor_parallel_size"] == 4
    with pytest.raises(LauncherError) as e:
        plan_of("generate_demo", "pipeline.stages.synth.resources.gres=gpu:2", *tp4)
    assert "4 GPUs per model but resources.gres is gpu:2: use tensor_parallel_size <= 2" in str(e.value)


def test_messages_name_the_resources_key_the_gpus_come_from():
    from launcher.sbatch.options import gpu_request

    assert gpu_request({"gres": "gpu:a100:4", "gpus_per_node": 0}) == "resources.gres is gpu:a100:4"
    assert gpu_request({"gpus_per_task": 1, "ntasks_per_node": 4}) == "resources.gpus_per_task is 1 x ntasks_per_node 4"
    assert gpu_request({"gpus_per_node": "a100:2"}) == "resources.gpus_per_node is a100:2"
    assert gpu_request({"gpus_per_node": 0, "gres": "shard:2"}) == "resources.gpus_per_node is 0"
