"""The sbatch script is rendered by submitit's builder; golden files pin what we hand to Slurm.
Regenerate after an intended change with: UPDATE_GOLDEN=1 pytest tests/unit/test_render.py"""
import os
import sys
from pathlib import Path

import pytest

from launcher.config.compose import PROJECT_ROOT, compose
from launcher.plan.model import build_plan
from launcher.plan.render import build_requests, render_script

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
RUN_DIR = Path("/shared/runs/RUN")


def render(stage, *overrides, chunk=1001, todo=None, pipeline="smoke"):
    plan = build_plan([compose([f"pipeline={pipeline}", "cluster=dev", "cluster.python=/env/bin/python", *overrides])],
                      [[]])
    reqs = build_requests(plan, todo or {s: range(p.total_tasks) for s, p in plan.stages.items()}, chunk)
    req = next(r for r in reqs if r.stage == stage)
    text = render_script(plan, req, RUN_DIR, "RUN")
    return text.replace(str(PROJECT_ROOT), "<project>"), reqs


@pytest.mark.parametrize("stage,overrides", [
    ("shards", []),
    ("checkpointing", ["pipeline.stages.checkpointing.resources.gpus_per_node=2",
                       "pipeline.stages.checkpointing.resources.mem_gb=1.5",
                       "pipeline.stages.checkpointing.resources.partition=gpu", "cluster.account=proj"]),
])
def test_golden_sbatch(stage, overrides):
    text, _ = render(stage, *overrides)
    golden = GOLDEN / f"{stage}.sbatch"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()


def test_script_essentials():
    text, _ = render("checkpointing")
    assert "#SBATCH --array=0\n" in text and "#SBATCH --signal=USR2@30" in text and "#SBATCH --requeue" in text
    assert "srun --unbuffered" in text and "-m jobs.task /shared/runs/RUN/stages/checkpointing/spec.json" in text
    assert "dependency" not in text  # passed on sbatch's command line at submission


def test_chunks_have_offsets_and_dependencies_span_chunks():
    text, reqs = render("shards", chunk=3)
    shards = [r for r in reqs if r.stage == "shards"]
    assert [(r.chunk, r.offset, r.indices) for r in shards] == [(0, 0, [0, 1, 2]), (1, 3, [0])]
    reduce = next(r for r in reqs if r.stage == "reduce")
    assert reduce.deps == [("afterok", "shards", None)]  # waits on every chunk
    assert "export LAUNCHER_TASK_OFFSET=0" in text
    assert "#SBATCH --array=0-2%4" in text


def test_resume_requests_cover_only_given_tasks():
    _, reqs = render("shards", todo={"shards": [2], "reduce": [0]})
    assert [(r.stage, r.tasks, r.deps) for r in reqs] == [("shards", [2], []), ("reduce", [0], [("afterok", "shards", None)])]
    text, _ = render("shards", todo={"shards": [2]})
    assert "#SBATCH --array=2%4" in text


def test_local_backend_script_runs_without_srun():
    plan = build_plan([compose(["pipeline=smoke", "cluster=local"])], [[]])
    req = build_requests(plan, {"shards": range(4)}, 1000)[0]
    text = render_script(plan, req, RUN_DIR, "RUN")
    assert "srun" not in text and f"{sys.executable}" in text


def test_throttle_is_per_sweep_point():
    points = [[f"pipeline.vars.scale={i}"] for i in range(3)]
    plan = build_plan([compose(["pipeline=smoke", "cluster=dev", *p]) for p in points], points)
    req = build_requests(plan, {"shards": range(12)}, 1001)[0]
    assert "#SBATCH --array=0-11%12" in render_script(plan, req, RUN_DIR, "RUN")


# A 2-node nanotron run: one srun task per node (each starts torchrun), the whole step killed when
# one node's torchrun fails, the pre-timeout signal and requeue for resuming from latest.txt.
NANOTRON_2_NODES = ["model=1b", "pipeline.vars.nodes=2", "pipeline.vars.dp=16", "pipeline.vars.data=/shared/tok",
                    "pipeline.vars.tokenizer=/shared/tok/tokenizer.json", "pipeline.stages.train.resources.partition=gpu"]


def test_golden_sbatch_of_a_two_node_nanotron_stage():
    text, _ = render("train", *NANOTRON_2_NODES, pipeline="pretrain")
    golden = GOLDEN / "pretrain_2_nodes.sbatch"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()
    assert "#SBATCH --nodes=2\n" in text and "#SBATCH --ntasks-per-node=1\n" in text
    assert "#SBATCH --gpus-per-node=8\n" in text and "#SBATCH --signal=USR2@300" in text
    assert "srun --unbuffered --output" in text and "--kill-on-bad-exit=1" in text
