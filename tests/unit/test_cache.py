"""Across runs (launcher/run/cache.py): which points another run's completed output serves, and which are
always computed (cache: false, --rerun and what follows, servers), from run directories on disk."""
import pytest

from jobs import layout
from launcher.run import cache
from launcher.plan import key_facts, keys
from launcher.config.compose import compose, sweep_points
from launcher.errors import ConfigErrors
from launcher.plan.model import build_plan


def keyed(root, *overrides, multirun=False):
    points = sweep_points(["pipeline=smoke", "cluster=local", f"run_root={root}", *overrides], multirun)
    plan = build_plan([compose(p) for p in points], points)
    keys.assign(plan, key_facts.gather(plan, str(root)))
    return plan


def old_run(root, plan, name="20260101-000000-smoke-a", done=None):
    """A run directory of `plan` whose tasks in `done` ({stage: tasks}; default all) have markers."""
    run = root / name
    run.mkdir(parents=True)
    layout.atomic_write_json(run / "plan.json", plan.to_json())
    layout.atomic_write_json(run / "run.json", {"id": name})
    for stage, s in plan.stages.items():
        for t in range(s.total_tasks) if done is None else done.get(stage, ()):
            layout.atomic_write_json(layout.marker_path(run, stage, s.hash, t), {})
    return run


def test_a_completed_point_of_another_run_is_cached_a_partial_one_is_not(tmp_path):
    run = old_run(tmp_path, keyed(tmp_path), done={"shards": [0, 1, 2, 3], "reduce": [0], "fanout": [0]})
    plan = keyed(tmp_path)
    cache.apply(plan, tmp_path)
    assert plan.stages["shards"].cached == {"0": {"run": str(run), "point": 0, "hash": plan.stages["shards"].hash,
                                                  "tasks": [0, 4]}}
    assert plan.stages["shards"].run_tasks() == [] and plan.stages["shards"].cached_tasks() == [0, 1, 2, 3]
    assert plan.stages["reduce"].cached and not plan.stages["fanout"].cached  # 1 of its 2 tasks done: still writing
    assert not plan.stages["checkpointing"].cached  # no marker at all
    other = keyed(tmp_path, "pipeline.vars.scale=3")  # another key: computed
    cache.apply(other, tmp_path)
    assert not any(s.cached for s in other.stages.values())


def test_cache_false_and_rerun_force_work_and_an_unknown_stage_is_refused(tmp_path):
    old_run(tmp_path, keyed(tmp_path))
    plan = keyed(tmp_path, "pipeline.stages.reduce.cache=false")
    cache.apply(plan, tmp_path)
    assert plan.stages["shards"].cached and not plan.stages["reduce"].cached
    plan = keyed(tmp_path)
    cache.apply(plan, tmp_path, rerun=["reduce"])
    assert plan.stages["shards"].cached
    assert not any(plan.stages[n].cached for n in ("reduce", "fanout", "checkpointing"))  # and what follows
    with pytest.raises(ConfigErrors) as e:
        cache.apply(keyed(tmp_path), tmp_path, rerun=["nope"])
    assert e.value.errors[0].key == "--rerun" and "nope" in e.value.errors[0].message


def test_an_aftercorr_edge_on_a_cached_parent_waits_on_the_whole_array(tmp_path):
    first = keyed(tmp_path, "pipeline.vars.scale=1,2", multirun=True)
    old_run(tmp_path, first, done={"shards": range(8), "reduce": [0, 1]})
    plan = keyed(tmp_path, "pipeline.vars.scale=1,2", "+pipeline.stages.checkpointing.env.X=a", multirun=True)
    cache.apply(plan, tmp_path)
    assert set(plan.stages["reduce"].cached) == {"0", "1"}
    assert [(d.kind, d.note) for d in plan.stages["checkpointing"].deps] == [("afterok", "cached")]
    assert plan.stages["checkpointing"].run_tasks() == [0, 1]


def test_runs_that_completed_everything_are_read_from_the_roots_index(tmp_path, monkeypatch):
    from launcher.run import cache_index
    from launcher.plan.model import Plan

    done = old_run(tmp_path, keyed(tmp_path), name="20260101-000000-smoke-a")
    partial = old_run(tmp_path, keyed(tmp_path, "pipeline.vars.scale=5"), name="20260102-000000-smoke-b",
                      done={"shards": range(4)})
    reads = []
    real = Plan.from_json
    monkeypatch.setattr(Plan, "from_json", classmethod(lambda cls, d: reads.append(1) or real(d)))
    first = cache.completed(tmp_path)
    assert len(reads) == 2 and (tmp_path / cache_index.NAME).is_file()
    assert cache.completed(tmp_path) == first and len(reads) == 3  # only the unfinished run again
    plan = keyed(tmp_path, "pipeline.vars.scale=5")
    for stage, s in plan.stages.items():  # it completes: read once more, then indexed too
        for t in range(s.total_tasks):
            layout.atomic_write_json(layout.marker_path(partial, stage, s.hash, t), {})
    assert len(cache.completed(tmp_path)) > len(first) and len(reads) == 4
    cache.completed(tmp_path)
    assert len(reads) == 4
    (done / "plan.json").write_text((done / "plan.json").read_text() + " ")  # a rewritten plan: read again
    cache.completed(tmp_path)
    assert len(reads) == 5
