"""A sweep that changes a stage's resources (issue 18 item 2; Hydra issue 2874): the points are grouped
by identical resources into one array job per group and stage, each rendered with its group's
resources; an aftercorr child is cut alike, so each of its jobs waits on exactly the parent job that
holds the same array indices (Slurm makes a task whose index the parent job lacks wait on the whole
job). A sweep that changes tasks or after stays an error."""
from pathlib import Path

import pytest

from launcher.config.compose import compose_points
from launcher.errors import ConfigErrors
from launcher.plan.model import build_plan
from launcher.plan.preflight import preflight
from launcher.plan.render import build_requests, render_script, stage_spec
from launcher.slurm.facts import parse_cluster_info

R = "pipeline.stages.reduce.resources"


def plan_of(*overrides):
    points, configs = compose_points(["pipeline=smoke", "cluster=dev", "cluster.python=/env/bin/python", *overrides],
                                     True)
    return build_plan(configs, points)


def requests(plan, chunk=1001):
    return build_requests(plan, {s: range(p.total_tasks) for s, p in plan.stages.items()}, chunk)


def script(plan, req):
    return render_script(plan, req, Path("/shared/runs/RUN"), "RUN")


def test_points_with_other_resources_get_their_own_array_job():
    plan = plan_of(f"{R}.time=00:05:00,00:10:00,00:05:00", f"{R}.cpus_per_task=1")
    reduce = plan.stages["reduce"]
    assert reduce.groups == [0, 1, 0] and [r["time"] for r in reduce.group_resources] == ["00:05:00", "00:10:00"]
    reqs = [r for r in requests(plan) if r.stage == "reduce"]
    assert [(r.tasks, r.group) for r in reqs] == [([0, 2], 0), ([1], 1)]
    assert ["#SBATCH --time=5\n" in script(plan, r) and "#SBATCH --array=0,2\n" in script(plan, r)
            for r in reqs] == [True, False]
    assert "#SBATCH --time=10\n" in script(plan, reqs[1]) and "#SBATCH --array=1\n" in script(plan, reqs[1])
    # Stages the sweep does not change stay one array job each (4 tasks x 3 points).
    assert [len(r.tasks) for r in requests(plan) if r.stage == "shards"] == [12]


def test_an_aftercorr_child_is_cut_alike_and_waits_on_the_matching_parent_job_only():
    plan = plan_of(f"{R}.time=00:05:00,00:10:00,00:05:00")
    reqs = requests(plan)
    reduce = {r.chunk: r.tasks for r in reqs if r.stage == "reduce"}
    ckpt = [r for r in reqs if r.stage == "checkpointing"]  # reduce -> checkpointing: aftercorr per point
    assert len(ckpt) == 2
    for r in ckpt:
        (kind, parent, part), = r.deps
        assert (kind, parent) == ("aftercorr", "reduce") and reduce[part] == r.tasks, (r, reduce)
    # A fan-in/out edge waits on every job of the parent (afterany on all of reduce's jobs).
    fanout = [r for r in reqs if r.stage == "fanout"]
    assert [d for r in fanout for d in r.deps] == [("afterany", "reduce", None)]


def test_the_hash_covers_each_points_resources_and_the_plan_without_a_change_is_as_before():
    one = plan_of(f"{R}.time=00:05:00,00:10:00").stages["reduce"]
    other = plan_of(f"{R}.time=00:05:00,00:15:00").stages["reduce"]
    same = plan_of(f"{R}.time=00:05:00,00:05:00").stages["reduce"]
    assert one.hash != other.hash and same.groups == [] and same.group_resources == []
    assert [r.chunk for r in requests(plan_of(f"{R}.time=00:05:00,00:05:00")) if r.stage == "reduce"] == [0]


def test_each_point_reads_its_own_resources_on_the_node():
    plan = plan_of(f"{R}.cpus_per_task=1,2")
    spec = stage_spec(plan, plan.stages["reduce"], Path("/shared/runs/RUN"), "RUN")
    assert [r["cpus_per_task"] for r in spec["point_resources"]] == [1, 2]
    from jobs.task import Task
    import os
    os.environ.update(LAUNCHER_TASK_OFFSET="1", LAUNCHER_ARRAY_TASK_ID="0")
    try:
        assert Task(spec).spec["resources"]["cpus_per_task"] == 2
    finally:
        del os.environ["LAUNCHER_TASK_OFFSET"], os.environ["LAUNCHER_ARRAY_TASK_ID"]


def test_each_resource_set_is_checked_against_the_cluster(tmp_path):
    info = parse_cluster_info("MaxArraySize = 1001\n", "PartitionName=debug Default=YES MaxTime=04:00:00 Nodes=n1 State=UP\n",
                              "NodeName=n1 CPUTot=4 RealMemory=8000 Partitions=debug State=IDLE\n")
    points, configs = compose_points(["pipeline=smoke", "cluster=dev", f"{R}.cpus_per_task=1,8"], True)
    found = [(e.key, e.message) for e in preflight(build_plan(configs, points), tmp_path, info)]
    assert any(k == f"{R}.cpus_per_task" and "8 CPUs per node" in m for k, m in found), found


def test_a_sweep_of_tasks_or_after_stays_an_error():
    for override, key in (("pipeline.stages.shards.tasks=1,2", "pipeline.stages.shards.tasks"),
                          ("pipeline.stages.fanout.after={reduce: afterany},{reduce: afterok}",
                           "pipeline.stages.fanout.after")):
        with pytest.raises(ConfigErrors) as e:
            plan_of(override)
        assert any(x.key == key and "differs between sweep points" in x.message for x in e.value.errors)


# --- sweep.independent ----------------------------------------------------------------------------------

def test_independent_points_wait_on_their_own_parents_only():
    """sweep.independent: a fan-in edge (shards, 4 tasks per point -> reduce) waits on the same point's
    shards job, so one point's failure leaves the others running; every stage is one job per point."""
    plan = plan_of("pipeline.vars.scale=1,2,3", "sweep.independent=true")
    reqs = requests(plan)
    assert plan.independent and len(reqs) == 3 * len(plan.stages)
    shards = {r.chunk: r.tasks for r in reqs if r.stage == "shards"}
    assert sorted(shards.values()) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    for r in (r for r in reqs if r.stage == "reduce"):
        (kind, parent, part), = r.deps
        point = r.tasks[0]
        assert (kind, parent) == ("afterok", "shards") and shards[part] == list(range(4 * point, 4 * point + 4))
    from launcher.run.status import parent_tasks
    assert parent_tasks(plan, "reduce", "afterok", "shards", 1) == [4, 5, 6, 7]
    assert parent_tasks(plan, "fanout", "afterany", "reduce", 5) == [2]  # fanout: 2 tasks per point


def test_without_independent_a_fan_in_waits_on_the_whole_parent_array():
    plan = plan_of("pipeline.vars.scale=1,2,3")
    assert not plan.independent
    assert [r.deps for r in requests(plan) if r.stage == "reduce"] == [[("afterok", "shards", None)]]
