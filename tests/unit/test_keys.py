"""Content keys of stage points (launcher/plan/keys.py, key_facts.py) and the shared sweep points they give:
what changes a key, what must not, and how shared points map to tasks, dependencies and status."""
import os
import sys
from pathlib import Path

import pytest

from jobs import layout
from launcher.plan import key_facts, keys
from launcher.config.compose import compose, sweep_points
from launcher.run.ops import all_tasks
from launcher.plan.model import Plan, build_plan
from launcher.plan.render import build_requests, stage_spec


def keyed(*overrides, multirun=False, root="/tmp/launcher-keys-root"):
    points = sweep_points(["pipeline=smoke", "cluster=local", f"run_root={root}", *overrides], multirun)
    plan = build_plan([compose(p) for p in points], points)
    keys.assign(plan, key_facts.gather(plan, root))
    return plan


def key(plan, stage, point=0):
    return plan.stages[stage].keys[point]


@pytest.fixture
def code(tmp_path):
    """Two code paths: a package the python stage's target lives in, and another one."""
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "mod.py").write_text("def reduce(ctx):\n    return {}\n")
    other = tmp_path / "otherpkg"
    other.mkdir()
    (other / "__init__.py").write_text("X = 1\n")
    return pkg, other


def with_code(pkg, other, *more):
    return (f"pipeline.code=[{pkg},{other}]", "pipeline.stages.reduce.target=mypkg.mod:reduce", *more)


def test_a_config_value_changes_the_key_and_the_keys_of_the_stages_reading_it():
    a, b = keyed("pipeline.vars.scale=1"), keyed("pipeline.vars.scale=2")
    assert key(a, "shards") != key(b, "shards")
    assert key(a, "reduce") != key(b, "reduce")  # its config is the same: its parent's key differs
    assert a.stages["reduce"].payloads == b.stages["reduce"].payloads
    assert key(a, "fanout") != key(b, "fanout")  # a grandchild, through reduce


def test_run_id_run_root_and_sweep_index_do_not_change_the_key(tmp_path):
    a = keyed(root=str(tmp_path / "a"))
    b = keyed(root=str(tmp_path / "b"))
    assert {n: s.keys for n, s in a.stages.items()} == {n: s.keys for n, s in b.stages.items()}
    # the point scale=2 is point 1 of one sweep and point 0 of the other: the same key
    up = keyed("pipeline.vars.scale=1,2", multirun=True)
    down = keyed("pipeline.vars.scale=2,1", multirun=True)
    for name in up.stages:
        assert up.stages[name].keys == down.stages[name].keys[::-1], name
    # the stage hash (markers/<hash>/) is not the key: it stays what older runs were planned with
    assert a.stages["shards"].hash == build_plan([compose(["pipeline=smoke", "cluster=local"])],
                                                 [["pipeline=smoke", "cluster=local"]]).stages["shards"].hash


def test_an_edit_of_a_code_file_changes_the_keys_of_the_stages_that_can_import_it(code):
    pkg, other = code
    before = keyed(*with_code(pkg, other))
    (pkg / "mod.py").write_text("def reduce(ctx):\n    return {'changed': 1}\n")
    after = keyed(*with_code(pkg, other))
    assert key(before, "reduce") != key(after, "reduce")
    assert key(before, "shards") != key(after, "shards")  # a command may import any code path
    assert key(before, "fanout") != key(after, "fanout")  # reads reduce
    # the python stage's target is in mypkg: otherpkg is not its code
    (other / "__init__.py").write_text("X = 2\n")
    third = keyed(*with_code(pkg, other))
    assert key(after, "shards") != key(third, "shards")

    def code_part(plan):
        return keys.parts(plan, plan.stages["reduce"], 0, key_facts.gather(plan, "/tmp"))["code"]

    assert code_part(after) == code_part(third)  # (its key changes through shards, which reads otherpkg)
    assert list(code_part(third)[1]) == [str(pkg)]


def test_a_touched_input_file_changes_the_key_a_small_file_by_content(tmp_path):
    data = tmp_path / "corpus"
    data.mkdir()
    doc = data / "doc.jsonl"
    doc.write_text('{"text": "a"}\n')
    single = tmp_path / "single.txt"
    single.write_text("one\n")
    args = (f"+pipeline.stages.shards.env.CORPUS={data}", f"+pipeline.stages.shards.env.ONE={single}")
    before = keyed(*args)
    st = doc.stat()
    os.utime(doc, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touch: same content, newer time
    touched = keyed(*args)
    assert key(before, "shards") != key(touched, "shards")
    assert key(before, "reduce") != key(touched, "reduce")
    os.utime(single, ns=(st.st_atime_ns, st.st_mtime_ns + 5 * 10**9))  # a small file counts by content
    assert key(keyed(*args), "shards") == key(touched, "shards")
    single.write_text("two\n")
    assert key(keyed(*args), "shards") != key(touched, "shards")
    parts = keys.parts(touched, touched.stages["shards"], 0, key_facts.gather(touched, "/tmp"))["external_inputs"][1]
    assert parts[str(data)].startswith("folder") and parts[str(single)].endswith("(content)")


def test_the_environment_package_list_changes_the_key(tmp_path):
    prefix = tmp_path / "venv"
    (prefix / "bin").mkdir(parents=True)
    os.symlink(sys.executable, prefix / "bin" / "python")
    site = prefix / "lib" / "python3.11" / "site-packages"
    site.mkdir(parents=True)
    env = {"name": "mine", "python": str(prefix / "bin" / "python"), "setup": [], "env": {}}
    before = key_facts.environment_identity({"environments": {"mine": {}}}, env)
    st = site.stat()
    (site / "newlib-1.0.dist-info").mkdir()  # pip install adds a distribution folder
    os.utime(site, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert key_facts.environment_identity({"environments": {"mine": {}}}, env) != before
    # a built environment is its requirement files (what `launcher env build` installs from)
    built = key_facts.environment_identity({"environments": {"cpu": {"build": "cpu"}}}, {"name": "cpu", "setup": [],
                                                                                          "env": {}})
    assert "built from cpu.txt" in built[1]
    # and the facts reach the key
    plan = keyed()
    facts = key_facts.gather(plan, "/tmp")
    k = keys.key_of(keys.parts(plan, plan.stages["shards"], 0, facts))
    facts.environments["shards"] = ("0" * 16, "another package list")
    assert keys.key_of(keys.parts(plan, plan.stages["shards"], 0, facts)) != k


def test_points_with_equal_keys_share_one_task_set_and_their_readers_find_it():
    plan = keyed("+pipeline.stages.fanout.env.X=a,b", multirun=True)
    shards, fanout = plan.stages["shards"], plan.stages["fanout"]
    assert shards.shared == [0, 0] and shards.run_tasks() == [0, 1, 2, 3] and shards.task_of(6) == 2
    assert fanout.shared == [] and fanout.run_tasks() == [0, 1, 2, 3]
    assert all_tasks(plan)["reduce"] == [0]
    assert keys.mapping(shards) == "0-1<-0" and keys.mapping(fanout) is None
    reqs = build_requests(plan, all_tasks(plan), chunk_size=1000)
    assert {r.stage: r.tasks for r in reqs}["checkpointing"] == [0]
    spec = stage_spec(plan, fanout, Path("/runs/r"), "r")
    assert spec["shared_points"]["reduce"] == [0, 0]
    assert layout.point_of(spec, "reduce", 1) == 0 and layout.point_of(spec, "fanout", 1) == 1
    # checkpointing and reduce share alike: aftercorr still pairs the same indices
    assert [(d.kind, d.note) for d in plan.stages["checkpointing"].deps] == [("aftercorr", "")]


def test_a_child_of_a_shared_parent_waits_on_the_whole_parent_array():
    plan = keyed("+pipeline.stages.checkpointing.env.X=a,b", multirun=True)
    assert plan.stages["reduce"].shared == [0, 0] and plan.stages["checkpointing"].shared == []
    d = plan.stages["checkpointing"].deps[0]
    assert (d.kind, d.declared, d.note) == ("afterok", "afterok", "shared")
    reqs = build_requests(plan, all_tasks(plan), chunk_size=1000)
    assert next(r for r in reqs if r.stage == "checkpointing").deps == [("afterok", "reduce", None)]


def test_servers_and_their_clients_never_share(tmp_path):
    plan = keyed("+pipeline.stages.shards.env.X=a,b", multirun=True)
    assert plan.stages["reduce"].shared == []  # sanity: keys differ downstream of the swept stage
    assert keys.shares(plan, plan.stages["reduce"])
    from launcher import kinds

    assert not kinds.get("serve").shares_points and not kinds.get("publish").shares_points


def test_a_plan_from_before_keys_has_every_point_its_own():
    plan = keyed("+pipeline.stages.fanout.env.X=a,b", multirun=True)
    old = plan.to_json()
    for s in old["stages"]:
        del s["keys"], s["shared"]
        for d in s["deps"]:
            del d["note"]
    back = Plan.from_json(old)
    assert back.stages["shards"].run_tasks() == list(range(8)) and back.stages["shards"].task_of(6) == 6
    assert Plan.from_json(plan.to_json()).stages["shards"].shared == [0, 0]


def test_explain_lists_every_part_with_its_digest():
    plan = keyed("+pipeline.stages.fanout.env.X=a,b", multirun=True)
    lines = keys.explain(plan, key_facts.gather(plan, "/tmp"), "shards")
    assert lines[0].startswith("shards point 0") and "key " + plan.stages["shards"].keys[0] in lines[0]
    assert "(computed by point 0)" in lines[len(lines) // 2]
    named = {line.split()[0] for line in lines if line.startswith("  ")}
    assert named == {"config", "inputs_of_stages", "code", "node_code", "environment", "external_inputs"}


def test_the_ablation_sweep_plans_its_data_stages_once_per_variant_and_the_tokenizer_once():
    """`launcher plan -m pipeline=ablation data=fineweb_like,raw seed=1,2 cluster=local` (issue 20)."""
    points = sweep_points(["pipeline=ablation", "cluster=local", "data=fineweb_like,raw", "seed=1,2"], True)
    plan = build_plan([compose(p) for p in points], points)
    keys.assign(plan, key_facts.gather(plan, "/tmp/launcher-keys-root"))
    tasks = all_tasks(plan)
    for name in ("clean", "dedup.signatures", "dedup.buckets", "dedup.clusters", "dedup.filter", "tokenize", "merge"):
        s = plan.stages[name]
        assert s.distinct_points == 2 and s.shared == [0, 0, 2, 2], name
        assert len(tasks[name]) == 2 * s.tasks_per_point, name
    assert plan.stages["tokenizer"].shared == [0, 0, 0, 0] and tasks["tokenizer"] == [0]
    assert len(set(plan.stages["train"].keys)) == 4 and tasks["train"] == [0, 1, 2, 3]
    assert {d.parent: (d.kind, d.note) for d in plan.stages["train"].deps} == \
        {"merge": ("afterok", "shared"), "tokenizer": ("afterok", "shared")}


def test_plan_explain_key_prints_the_parts_and_refuses_an_unknown_stage(capsys, tmp_path):
    from launcher.cli import main

    args = ["plan", "-m", "pipeline=smoke", "cluster=local", f"run_root={tmp_path}", "+pipeline.stages.fanout.env.X=a,b"]
    assert main([*args, "--explain-key", "reduce"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("reduce point 0") and "(computed by point 0)" in out and "inputs_of_stages" in out
    assert not (tmp_path / "plans").exists()  # writes nothing
    assert main([*args, "--explain-key", "nope"]) != 0
    assert "--explain-key: the plan has no stage 'nope'" in capsys.readouterr().err


def test_a_stage_with_cache_false_never_shares_its_points():
    plan = keyed("pipeline.stages.reduce.resources.time=00:05:00,00:07:00", "pipeline.stages.reduce.cache=false",
                  multirun=True)
    assert plan.stages["shards"].shared == [0, 0]  # the time limit is not in the key
    assert plan.stages["reduce"].keys[0] == plan.stages["reduce"].keys[1] and plan.stages["reduce"].shared == []
    assert plan.stages["reduce"].run_tasks() == [0, 1]
