"""Config → plan: the pure part, with every structural error naming stage and key."""
import pytest

from launcher.config.compose import compose, sweep_points
from launcher.errors import ConfigError, ConfigErrors
from launcher.plan.model import build_plan, parse_time_min


def plan_of(*overrides, multirun=False):
    points = sweep_points(["pipeline=smoke", "cluster=local", *overrides], multirun)
    return build_plan([compose(p) for p in points], points)


def errors_of(*overrides, multirun=False):
    with pytest.raises(ConfigErrors) as e:
        plan_of(*overrides, multirun=multirun)
    return [(x.stage, x.key, x.message) for x in e.value.errors]


def test_smoke_plan_is_a_dag_in_topological_order():
    plan = plan_of()
    assert list(plan.stages)[0] == "shards"
    assert [(d.parent, d.kind) for d in plan.stages["reduce"].deps] == [("shards", "afterok")]
    assert [(d.parent, d.kind) for d in plan.stages["fanout"].deps] == [("reduce", "afterany")]
    assert plan.stages["shards"].total_tasks == 4 and plan.stages["shards"].throttle == 4


def test_sweep_multiplies_tasks_and_turns_one_to_one_afterok_into_aftercorr():
    plan = plan_of("pipeline.vars.scale=1,2,3", multirun=True)
    assert len(plan.points) == 3
    assert plan.stages["shards"].total_tasks == 12
    assert plan.stages["reduce"].total_tasks == 3
    ck = plan.stages["checkpointing"].deps[0]
    assert (ck.kind, ck.declared) == ("aftercorr", "afterok")
    # fan-in keeps waiting on the whole parent array: aftercorr would be wrong for 4 → 1
    assert plan.stages["reduce"].deps[0].kind == "afterok"
    assert plan.stages["fanout"].deps[0].kind == "afterany"  # Slurm has no 'aftercorr-any'
    assert plan.stages["shards"].split(7) == (1, 3)
    assert [p["command"] for p in plan.stages["shards"].payloads][0] != plan.stages["shards"].payloads[1]["command"]


def test_sweep_without_multirun_flag_is_an_error():
    with pytest.raises(ConfigError, match="multirun"):
        sweep_points(["pipeline.vars.scale=1,2"], multirun=False)


def test_sweep_cannot_change_array_structure():
    errs = errors_of("pipeline.stages.shards.tasks=1,2", multirun=True)
    assert errs[0][:2] == ("shards", "pipeline.stages.shards.tasks")


def test_unknown_stage_in_after():
    errs = errors_of("+pipeline.stages.reduce.after.nope=afterok")
    assert errs == [("reduce", "pipeline.stages.reduce.after.nope", errs[0][2])]
    assert "unknown stage 'nope'" in errs[0][2]


def test_cycle_is_reported_with_its_path():
    errs = errors_of("+pipeline.stages.shards.after.fanout=afterok")
    assert len(errs) == 1 and "cycle" in errs[0][2]
    assert errs[0][1].startswith("pipeline.stages.") and errs[0][1].endswith(".after")
    for name in ("shards", "reduce", "fanout"):
        assert name in errs[0][2]


def test_self_dependency():
    errs = errors_of("+pipeline.stages.reduce.after.reduce=afterok")
    assert ("reduce", "pipeline.stages.reduce.after") == errs[0][:2]


def test_aftercorr_needs_equal_arrays():
    errs = errors_of("pipeline.stages.reduce.after.shards=aftercorr")
    assert errs[0][:2] == ("reduce", "pipeline.stages.reduce.after.shards")
    assert "equal size" in errs[0][2]


def test_invalid_edge_kind_fails_at_compose_with_stage_and_key():
    with pytest.raises(ConfigError) as e:
        plan_of("pipeline.stages.reduce.after.shards=afterwhenever")
    assert e.value.stage == "reduce" and e.value.key.startswith("pipeline.stages.reduce.after")


@pytest.mark.parametrize("override,key", [
    ("pipeline.stages.shards.tasks=0", "pipeline.stages.shards.tasks"),
    ("pipeline.stages.shards.throttle=0", "pipeline.stages.shards.throttle"),
    ("pipeline.stages.shards.resources.time=soon", "pipeline.stages.shards.resources.time"),
    ("pipeline.stages.shards.resources.nodes=0", "pipeline.stages.shards.resources.nodes"),
    ("pipeline.stages.shards.requeue.signal=NOPE", "pipeline.stages.shards.requeue.signal"),
    ("pipeline.stages.shards.requeue.signal_delay_s=400", "pipeline.stages.shards.requeue.signal_delay_s"),
    ("pipeline.stages.shards.requeue.term_grace_s=0", "pipeline.stages.shards.requeue.term_grace_s"),
    ("pipeline.stages.shards.requeue.term_grace_s=300", "pipeline.stages.shards.requeue.term_grace_s"),
    ("pipeline.stages.reduce.target=not-an-import-path", "pipeline.stages.reduce.target"),
    ("pipeline.stages.shards.command=''", "pipeline.stages.shards.command"),
])
def test_stage_value_errors(override, key):
    errs = errors_of(override)
    assert (key.split(".")[2], key) in [e[:2] for e in errs]


@pytest.mark.parametrize("override,key", [
    ("pipeline.stages.shards.tasks=many", "pipeline.stages.shards.tasks"),
    ("pipeline.stages.shards.bogus=1", "pipeline.stages.shards.bogus"),
    ("pipeline.stages.shards.command=${nope}", "pipeline.stages.shards.command"),
])
def test_compose_errors_name_stage_and_key(override, key):
    with pytest.raises(ConfigError) as e:
        plan_of(override)
    assert e.value.stage == "shards" and e.value.key == key


def test_unknown_cluster_profile_lists_the_profiles():
    with pytest.raises(ConfigError, match="dev"):
        compose(["cluster=nope"])


def test_hash_follows_config_and_propagates_downstream():
    a, b = plan_of(), plan_of("pipeline.vars.scale=5")
    assert a.stages["shards"].hash != b.stages["shards"].hash
    assert a.stages["reduce"].hash != b.stages["reduce"].hash  # its input changed
    c = plan_of("pipeline.stages.fanout.tasks=3")
    assert a.stages["shards"].hash == c.stages["shards"].hash
    assert a.stages["fanout"].hash != c.stages["fanout"].hash
    assert plan_of().stages["reduce"].hash == a.stages["reduce"].hash  # deterministic


@pytest.mark.parametrize("text,minutes", [
    ("30", 30), ("00:10:00", 10), ("1:30", 2), ("2-00", 2880), ("1-01:30:00", 1530), ("0:00:30", 1), ("90:00", 90),
])
def test_slurm_time_formats(text, minutes):
    assert parse_time_min(text) == minutes


def test_gpu_hours_upper_bound():
    plan = plan_of("pipeline.stages.shards.resources.gpus_per_node=2", "pipeline.stages.shards.resources.time=01:00:00")
    assert plan.stages["shards"].gpu_hours == 4 * 2 * 1.0
