"""Datatrove stages on the login side: minhash expansion, block flattening, block checks, targets."""
import copy
import functools
import json
import subprocess
import sys

import pytest

from jobs.runtime.targets import locate
from launcher.kinds import minhash, preprocess
from launcher.config.compose import PROJECT_ROOT, compose
from launcher.config.environments import interpreter_problems
from launcher.errors import ConfigErrors
from launcher.plan.model import build_plan

MINHASH = "datatrove.pipeline.dedup.minhash"
READER = "datatrove.pipeline.readers.JsonlReader"
WRITER = "datatrove.pipeline.writers.JsonlWriter"


@functools.lru_cache(maxsize=None)
def _composed(overrides):
    return compose(["pipeline=data", "cluster=local", *overrides])


def data_cfg(*overrides):
    """The data pipeline, composed once per override set; each caller gets its own copy to edit."""
    return copy.deepcopy(_composed(overrides))


def plan_of(cfg):
    return build_plan([cfg], [[]])


def errors_of(cfg):
    with pytest.raises(ConfigErrors) as e:
        plan_of(cfg)
    return [(x.stage, x.key, x.message) for x in e.value.errors]


def stages_of(cfg):
    return cfg["pipeline"]["stages"]


def block_targets(plan, stage):
    return [b["_target_"] for b in plan.stages[stage].payloads[0]["blocks"]]


# -- minhash expansion through build_plan ----------------------------------------------------------

def test_data_pipeline_expands_minhash_into_four_stages_in_order():
    plan = plan_of(data_cfg())
    assert list(plan.stages) == ["clean", "dedup.signatures", "dedup.buckets", "dedup.clusters", "dedup.filter",
                                 "tokenizer", "tokenize", "merge"]
    assert {n: s.tasks_per_point for n, s in plan.stages.items()} == {
        "clean": 4, "dedup.signatures": 4, "dedup.buckets": 14, "dedup.clusters": 1, "dedup.filter": 4,
        "tokenizer": 1, "tokenize": 4, "merge": 1}
    assert all(s.kind == "preprocess" for s in plan.stages.values())
    assert plan.aliases == {"dedup": "dedup.filter"}
    chain = [(n, [d.parent for d in plan.stages[n].deps]) for n in list(plan.stages)[1:5]]
    assert chain == [("dedup.signatures", ["clean"]), ("dedup.buckets", ["dedup.signatures"]),
                     ("dedup.clusters", ["dedup.buckets"]), ("dedup.filter", ["dedup.clusters"])]


def test_stages_after_minhash_wait_for_and_read_its_filter_stage():
    plan = plan_of(data_cfg())
    assert [(d.parent, d.kind) for d in plan.stages["tokenize"].deps] == [("dedup.filter", "afterok"),
                                                                         ("tokenizer", "afterok")]
    assert [d.parent for d in plan.stages["tokenizer"].deps] == ["dedup.filter"]
    blocks = plan.stages["tokenize"].payloads[0]["blocks"]
    assert blocks[0] == {"_target_": READER, "data_folder": "{input:dedup.filter}"}
    assert blocks[1]["tokenizer_name_or_path"] == "{input:tokenizer}/tokenizer.json"  # not an alias: unchanged
    assert "{input:dedup}" not in json.dumps(plan.to_json())


def test_minhash_parts_carry_the_recipe_and_read_the_minhash_parent():
    plan = plan_of(data_cfg())
    sig = plan.stages["dedup.signatures"].payloads[0]["blocks"]
    assert sig[0] == {"_target_": READER, "data_folder": "{input:clean}"}
    assert sig[1]["_target_"] == f"{MINHASH}.MinhashDedupSignature" and sig[1]["output_folder"] == "{output}"
    config = sig[1]["config"]
    assert (config["n_grams"], config["num_buckets"], config["hashes_per_bucket"], config["seed"]) == (5, 14, 8, 1)
    assert config["hash_config"] == {"_target_": "datatrove.utils.hashing.HashConfig", "precision": 64}
    assert block_targets(plan, "dedup.buckets") == [f"{MINHASH}.MinhashDedupBuckets"]
    assert block_targets(plan, "dedup.clusters") == [f"{MINHASH}.MinhashDedupCluster"]
    filt = plan.stages["dedup.filter"].payloads[0]["blocks"]
    assert filt == [{"_target_": READER, "data_folder": "{input:clean}"},
                    {"_target_": f"{MINHASH}.MinhashDedupFilter", "input_folder": "{input:dedup.clusters}"},
                    {"_target_": WRITER, "output_folder": "{output}"}]


def test_num_buckets_sets_the_bucket_stage_size_and_throttle_is_dropped_for_one_task():
    plan = plan_of(data_cfg("data.minhash.num_buckets=3", "data.throttle=2"))
    assert plan.stages["dedup.buckets"].tasks_per_point == 3
    assert plan.stages["dedup.signatures"].payloads[0]["blocks"][1]["config"]["num_buckets"] == 3
    assert {n: plan.stages[n].throttle for n in ("dedup.signatures", "dedup.buckets", "dedup.clusters",
                                                  "dedup.filter")} == {
        "dedup.signatures": 2, "dedup.buckets": 2, "dedup.clusters": None, "dedup.filter": 2}
    assert plan.stages["dedup.buckets"].hash != plan_of(data_cfg()).stages["dedup.buckets"].hash


def test_expand_does_not_modify_its_input_and_leaves_plain_pipelines_alone():
    cfg = data_cfg()
    before = copy.deepcopy(cfg)
    out, aliases = minhash.expand(cfg)
    assert cfg == before
    assert "dedup" not in stages_of(out) and "dedup.filter" in stages_of(out)
    smoke = compose(["pipeline=smoke", "cluster=local"])
    assert minhash.expand(smoke) == (smoke, {})


# -- flatten ---------------------------------------------------------------------------------------

def test_flatten_splices_lists_and_named_groups_in_order_and_drops_nulls():
    a, b, c, d = ({"_target_": x, "arg": {"nested": 1}} for x in "abcd")
    assert preprocess.flatten(None) == []
    assert preprocess.flatten(a) == [a]  # a block with _target_ stays whole, its dict arguments too
    assert preprocess.flatten([a, [b, [None, c]], None]) == [a, b, c]
    assert preprocess.flatten([a, {"x": b, "off": None, "y": [c, {"z": d}]}]) == [a, b, c, d]
    assert preprocess.flatten([{}, [], {"empty": {}}]) == []
    assert preprocess.flatten(["oops", 3]) == ["oops", 3]  # left for check_stage to report


def test_recipe_groups_are_flattened_and_data_raw_leaves_only_reader_and_writer():
    plan = plan_of(data_cfg())
    assert block_targets(plan, "clean") == [
        READER, "datatrove.pipeline.filters.URLFilter", "jobs.adapters.datatrove_blocks.language_filter",
        "datatrove.pipeline.filters.GopherRepetitionFilter", "datatrove.pipeline.filters.GopherQualityFilter",
        "datatrove.pipeline.filters.C4QualityFilter", "datatrove.pipeline.filters.FineWebQualityFilter", WRITER]
    no_c4 = plan_of(data_cfg("data.filters.c4_quality=null"))
    assert "datatrove.pipeline.filters.C4QualityFilter" not in block_targets(no_c4, "clean")
    assert len(block_targets(no_c4, "clean")) == 7
    raw = plan_of(data_cfg("data=raw"))
    assert block_targets(raw, "clean") == [READER, WRITER]
    assert raw.stages["clean"].payloads[0]["blocks"][1] == {"_target_": WRITER, "output_folder": "{output}"}
    assert raw.stages["clean"].hash != plan.stages["clean"].hash


# -- checks ----------------------------------------------------------------------------------------

def test_preprocess_stage_without_blocks():
    cfg = data_cfg()
    stages_of(cfg)["merge"]["blocks"] = [None, {"off": None}]  # flattens to nothing
    errs = errors_of(cfg)
    assert [e[:2] for e in errs] == [("merge", "pipeline.stages.merge.blocks")]
    assert "needs blocks" in errs[0][2]


def test_block_that_is_not_a_mapping_with_target():
    cfg = data_cfg()
    merge = stages_of(cfg)["merge"]
    merge["blocks"] += ["JsonlWriter", {"_target_": "  ", "x": 1}, {"_target_": 7}]
    errs = errors_of(cfg)
    assert [e[:2] for e in errs] == [("merge", f"pipeline.stages.merge.blocks.{i}") for i in (1, 2, 3)]
    assert all("mapping with _target_" in e[2] for e in errs)
    assert "'JsonlWriter'" in errs[0][2]


def test_bare_input_in_a_stage_with_two_parents():
    cfg = data_cfg()
    stages_of(cfg)["tokenize"]["blocks"][0]["data_folder"] = "{input}"
    errs = errors_of(cfg)
    assert [e[:2] for e in errs] == [("tokenize", "pipeline.stages.tokenize.blocks.0.data_folder")]
    assert "exactly one stage" in errs[0][2] and "(has 2)" in errs[0][2]


def test_input_naming_a_stage_that_is_not_an_ancestor():
    cfg = data_cfg()
    stages_of(cfg)["merge"]["blocks"][0]["input_folder"] = "{input:nosuch}/x"
    stages_of(cfg)["tokenizer"]["blocks"][0]["data_folder"] = "{input:tokenize}"  # a later stage
    errs = errors_of(cfg)
    assert sorted(e[:2] for e in errs) == [("merge", "pipeline.stages.merge.blocks.0.input_folder"),
                                           ("tokenizer", "pipeline.stages.tokenizer.blocks.0.data_folder")]
    assert all("is not a stage this one waits for" in e[2] for e in errs)
    assert any("'nosuch'" in e[2] for e in errs) and any("'tokenize'" in e[2] for e in errs)


def test_input_may_name_any_ancestor_and_other_folders_take_no_stage():
    cfg = data_cfg()
    stages_of(cfg)["merge"]["blocks"][0]["input_folder"] = "{input:clean}"  # through tokenize → ... → clean
    assert plan_of(cfg).stages["merge"].payloads[0]["blocks"][0]["input_folder"] == "{input:clean}"
    stages_of(cfg)["merge"]["blocks"][0]["output_folder"] = "{output:clean}"
    errs = errors_of(cfg)
    assert [e[:2] for e in errs] == [("merge", "pipeline.stages.merge.blocks.0.output_folder")]
    assert "takes no stage name" in errs[0][2]


def test_minhash_precision_must_be_32_or_64():
    errs = errors_of(data_cfg("pipeline.stages.dedup.minhash.precision=16"))
    assert [e[:2] for e in errs] == [("dedup", "pipeline.stages.dedup.minhash.precision")]
    assert "32 or 64" in errs[0][2] and "16" in errs[0][2]


def test_minhash_num_buckets_must_be_positive():
    errs = errors_of(data_cfg("data.minhash.num_buckets=0"))
    assert [e[:2] for e in errs] == [("dedup", "pipeline.stages.dedup.minhash.num_buckets")]
    assert ">= 1" in errs[0][2]


def test_minhash_reader_needs_target_and_one_parent_for_bare_input():
    cfg = data_cfg()
    dedup = stages_of(cfg)["dedup"]
    dedup["after"]["tokenizer"] = "afterok"  # two parents (and a cycle, never reached)
    dedup["minhash"]["writer"] = {"output_folder": "{output}"}
    errs = errors_of(cfg)
    assert sorted(e[:2] for e in errs) == [("dedup", "pipeline.stages.dedup.minhash.reader"),
                                           ("dedup", "pipeline.stages.dedup.minhash.writer")]


# -- targets and local inputs ----------------------------------------------------------------------

def test_targets_lists_every_nested_target_with_its_key():
    st = {"blocks": [{"_target_": "a.B", "tok": {"_target_": "c.D", "n": 1}, "s": "x"},
                     {"_target_": "e.F", "items": [{"_target_": "g.H"}, {"no": "target"}, {"_target_": 3}]}]}
    assert preprocess.targets("s", st) == [
        ("pipeline.stages.s.blocks.0._target_", "a.B"), ("pipeline.stages.s.blocks.0.tok._target_", "c.D"),
        ("pipeline.stages.s.blocks.1._target_", "e.F"), ("pipeline.stages.s.blocks.1.items.0._target_", "g.H")]
    expanded, _ = minhash.expand(data_cfg())
    key = "pipeline.stages.dedup.signatures.blocks"
    assert preprocess.targets("dedup.signatures", stages_of(expanded)["dedup.signatures"]) == [
        (f"{key}.0._target_", READER), (f"{key}.1._target_", f"{MINHASH}.MinhashDedupSignature"),
        (f"{key}.1.config._target_", f"{MINHASH}.MinhashConfig"),
        (f"{key}.1.config.hash_config._target_", "datatrove.utils.hashing.HashConfig")]


def test_local_inputs_are_reader_folders_without_placeholder_or_url():
    st = {"blocks": [{"_target_": "r", "data_folder": "/data/x"}, {"_target_": "r", "data_folder": "{input}"},
                     {"_target_": "r", "data_folder": "s3://bucket/x"}, {"_target_": "f", "input_folder": "rel/y"},
                     {"_target_": "w", "output_folder": "/out"}]}
    assert preprocess.local_inputs("s", st) == [("pipeline.stages.s.blocks.0.data_folder", "/data/x"),
                                                ("pipeline.stages.s.blocks.3.input_folder", "rel/y")]


# -- resolving targets -----------------------------------------------------------------------------

def test_locate_resolves_dotted_and_colon_targets():
    import collections
    import os.path

    assert locate("os.path.join") is os.path.join
    assert locate("os.path:join") is os.path.join
    assert locate("collections.OrderedDict") is collections.OrderedDict
    assert locate("collections") is collections
    # the longest prefix that is a module wins: 'collections.OrderedDict' is not one, 'collections' is
    assert locate("collections.OrderedDict.fromkeys") == collections.OrderedDict.fromkeys


def test_locate_missing_attribute_and_missing_module():
    with pytest.raises(AttributeError):
        locate("collections.NoSuchClass")
    with pytest.raises(AttributeError):
        locate("os.path:nope")
    with pytest.raises(ModuleNotFoundError):
        locate("nosuchmod_xyz.Thing")
    with pytest.raises(ModuleNotFoundError):
        locate("nosuchmod_xyz:thing")


def test_targets_module_reports_exactly_the_bad_names():
    request = {"modules": ["json"], "targets": ["json.dumps", "json.NoSuch", "nosuchmod.X"]}
    p = subprocess.run([sys.executable, "-m", "jobs.runtime.targets"], input=json.dumps(request), capture_output=True,
                       text=True, cwd=PROJECT_ROOT, timeout=60)
    assert p.returncode == 0, p.stderr
    problems = json.loads(p.stdout)
    assert sorted(problems) == ["json.NoSuch", "nosuchmod.X"]
    assert "AttributeError" in problems["json.NoSuch"] and "ModuleNotFoundError" in problems["nosuchmod.X"]


def test_interpreter_problems():
    assert interpreter_problems(sys.executable, ["json"], ["json.dumps"]) == {}
    problems = interpreter_problems(sys.executable, ["json"], ["json.nope"])
    assert list(problems) == ["json.nope"]
    missing = interpreter_problems("/no/such/python3", ["json"], [])
    assert list(missing) == [""] and "/no/such/python3" in missing[""]


def test_a_minhash_stage_reading_another_minhash_stage_reads_its_filter_part():
    cfg = data_cfg()
    second = copy.deepcopy(stages_of(cfg)["dedup"])
    second["after"] = {"dedup": "afterok"}
    second["minhash"]["reader"]["data_folder"] = "{input:dedup}"
    stages_of(cfg)["dedup2"] = second
    plan = plan_of(cfg)
    for part in ("dedup2.signatures", "dedup2.filter"):
        assert plan.stages[part].payloads[0]["blocks"][0]["data_folder"] == "{input:dedup.filter}"
    assert [d.parent for d in plan.stages["dedup2.signatures"].deps] == ["dedup.filter"]


def test_locate_reports_the_missing_import_of_a_module_whose_name_extends_it(tmp_path, monkeypatch):
    """pkg.modx imports a missing pkg.mod: the error names pkg.mod, not 'pkg has no attribute modx'."""
    (tmp_path / "pkgx").mkdir()
    (tmp_path / "pkgx" / "__init__.py").write_text("")
    (tmp_path / "pkgx" / "modx.py").write_text("import pkgx.mod\nX = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="pkgx.mod'"):
        locate("pkgx.modx.X")
