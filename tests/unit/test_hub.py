"""Hub references (hf://org/name@rev): parsing, the fetch stage the plan adds and its edges, what each
stage's script exports (offline except fetch; the shared cache), the preflight cache check, and the
compute side's resolution to the cached snapshot."""
from pathlib import Path

import pytest

from jobs.adapters import hub_refs as hub
from launcher import kinds
from launcher.kinds.fetch import FETCH_STAGE
from launcher.plan.preflight import check_hub_cache
from launcher.config.compose import compose, sweep_points
from launcher.errors import ConfigError, ConfigErrors
from launcher.plan.model import build_plan
from launcher.plan.render import build_requests, render_script

from conftest import hub_cache_with

MODEL = "+pipeline.stages.reduce.params.model"


def check_cached(plan, errors: list) -> None:
    """Preflight's hub checks: every named repo is fetched or cached; a fetch stage has a cache."""
    check_hub_cache(plan, errors)
    for s in plan.stages.values():
        if kinds.get(s.kind).downloads_hub_refs:
            errors += kinds.get(s.kind).preflight(plan, s)


def plan_of(*overrides, multirun=False):
    points = sweep_points(["pipeline=smoke", "cluster=local", *overrides], multirun)
    return build_plan([compose(p) for p in points], points)


def test_parse():
    assert hub.parse("hf://org/tiny") == hub.Ref("org/tiny", "model", "main")
    assert hub.parse("hf://datasets/org/chat@v1.2") == hub.Ref("org/chat", "dataset", "v1.2")
    assert str(hub.parse("hf://org/tiny@abc")) == "hf://org/tiny@abc"
    for not_a_ref in ("org/tiny", "hf://tiny", "/data/hf://x", "hf://org/tiny/extra"):
        assert hub.parse(not_a_ref) is None


@pytest.mark.parametrize("rev", ["refs/pr/1", "refs/convert/parquet", "feature/long-context", "v1.0", "main",
                                 "0123abc", "0123456789abcdef0123456789abcdef01234567", "release_2.x"])
def test_every_revision_form_of_the_hub_is_a_reference(rev):
    """Branches with slashes, pull-request and conversion refs, tags, short and full commits."""
    assert hub.parse(f"hf://org/tiny@{rev}") == hub.Ref("org/tiny", "model", rev)
    assert hub.parse(f"hf://datasets/org/d@{rev}").revision == rev
    assert str(hub.parse(f"hf://org/tiny@{rev}")) == f"hf://org/tiny@{rev}"


@pytest.mark.parametrize("value,words", [
    ("hf://org/tiny@a..b", "'..'"), ("hf://org/tiny@refs/pr/1/", "end with '/'"), ("hf://org/tiny@x y", "spaces"),
    ("hf://org/tiny@", "empty"), ("hf://org/tiny@.hidden", "start with '.'"), ("hf://org/ti--ny", "'--'"),
    ("hf://tiny", "org/name"), ("hf://org/tiny/extra", "org/name"), ("hf://spaces/org/app", "only models"),
    ("hf://org/tiny@x~1", "~"), ("hf://org/tiny@br.lock", ".lock"),
])
def test_a_malformed_hub_reference_is_refused_with_its_key(value, words):
    assert hub.parse(value) is None and words in hub.problem(value)
    with pytest.raises(ConfigErrors) as e:
        plan_of(f"{MODEL}='{value}'", "cluster.hub_cache=/shared/hf")
    assert [(x.stage, x.key) for x in e.value.errors] == [("reduce", MODEL.lstrip("+"))]


def test_a_revision_with_slashes_is_found_in_the_cache(tmp_path):
    """snapshot_download writes refs/<revision> with the revision's slashes as folders."""
    cache = hub_cache_with(tmp_path, ref="refs/pr/1", commit="feedbeef")
    assert hub.snapshot(cache, hub.parse("hf://org/tiny@refs/pr/1")) == cache / "models--org--tiny" / "snapshots" / "feedbeef"


def test_a_stage_naming_a_hub_repo_gets_a_fetch_stage_before_it():
    plan = plan_of(f"{MODEL}=hf://org/tiny@main", "cluster.hub_cache=/shared/hf")
    assert list(plan.stages)[0] == FETCH_STAGE
    fetch = plan.stages[FETCH_STAGE]
    assert fetch.kind == "fetch" and fetch.payloads[0]["fetch"]["repos"] == ["hf://org/tiny@main"]
    assert ("hub_fetch", "afterok") in [(d.parent, d.declared) for d in plan.stages["reduce"].deps]
    assert all(d.parent != "hub_fetch" for d in plan.stages["shards"].deps)  # only the stage that names it waits


def test_in_a_sweep_every_point_waits_on_the_fetch():
    plan = plan_of(f"{MODEL}=hf://org/a,hf://org/b", "cluster.hub_cache=/shared/hf", multirun=True)
    assert [p["fetch"]["repos"] for p in plan.stages["hub_fetch"].payloads] == [["hf://org/a@main"], ["hf://org/b@main"]]
    assert plan.stages["hub_fetch"].points == 2


def test_scripts_are_offline_except_the_fetch_and_all_read_the_shared_cache():
    plan = plan_of(f"{MODEL}=hf://org/tiny@main", "cluster.hub_cache=/shared/hf", "cluster.hub_endpoint=http://mirror")
    reqs = build_requests(plan, {n: list(range(s.total_tasks)) for n, s in plan.stages.items()}, 1000)
    scripts = {r.stage: render_script(plan, r, Path("/r"), "r1") for r in reqs}
    assert "export HF_HUB_OFFLINE=1" in scripts["reduce"] and "export HF_HUB_CACHE=/shared/hf" in scripts["reduce"]
    assert "export HF_HUB_OFFLINE=1" in scripts["shards"]
    assert "HF_HUB_OFFLINE" not in scripts["hub_fetch"] and "export HF_ENDPOINT=http://mirror" in scripts["hub_fetch"]
    assert "export HF_HUB_CACHE=/shared/hf" in scripts["hub_fetch"]


def test_preflight_requires_a_repo_in_the_cache_when_nothing_fetches_it(tmp_path):
    cache = hub_cache_with(tmp_path, commit="abc123")
    errors: list = []
    check_cached(plan_of(f"{MODEL}=hf://org/missing", f"cluster.hub_cache={cache}", "cluster.hub_fetch=never"),
                           errors)
    assert [(e.stage, e.key) for e in errors] == [("reduce", "pipeline.stages.reduce.params.model")]
    assert "org/missing" in errors[0].message and "not in the hub cache" in errors[0].message
    errors.clear()
    plan = plan_of(f"{MODEL}=hf://org/tiny@main", f"cluster.hub_cache={cache}", "cluster.hub_fetch=never")
    assert "hub_fetch" not in plan.stages
    check_cached(plan, errors)
    assert errors == []  # cached: passes offline


def test_a_fetch_needs_a_cache_to_download_into():
    errors: list = []
    check_cached(plan_of(f"{MODEL}=hf://org/tiny"), errors)
    assert [(e.stage, e.key) for e in errors] == [("hub_fetch", "cluster.hub_cache")]


def test_a_task_sees_the_snapshot_folder(tmp_path):
    cache = hub_cache_with(tmp_path, commit="abc123")
    assert hub.resolve({"model": "hf://org/tiny", "x": ["hf://org/tiny@abc123", "keep"]}, str(cache)) == {
        "model": str(cache / "models--org--tiny/snapshots/abc123"),
        "x": [str(cache / "models--org--tiny/snapshots/abc123"), "keep"]}
    with pytest.raises(FileNotFoundError, match="hf://org/other is not in the hub cache"):
        hub.resolve("hf://org/other", str(cache))


def test_a_bad_reference_in_a_fetch_stage_is_named():
    errors: list = []
    st = {"kind": "fetch", "fetch": {"repos": ["org/tiny"]}, "after": {}}
    kinds.get("fetch").check_in_dag(kinds.Problems("f", errors), st, {"f": st}, set())
    assert isinstance(errors[0], ConfigError) and errors[0].key == "pipeline.stages.f.fetch.repos.0"


def test_the_card_records_the_run_and_the_last_scores(tmp_path):
    import json

    from jobs.adapters import hub_card

    (tmp_path / "config").mkdir()
    (tmp_path / "run.json").write_text(json.dumps({"id": "r1", "pipeline": "demo", "campaign": "c1",
                                                   "points": [["pipeline=demo", "seed=2"]]}))
    (tmp_path / "config" / "point-0.json").write_text(json.dumps({
        "cluster": {"account": "secret-project"}, "data": {"recipe": "fineweb_like", "filters": {"url": {}, "c4": None},
                                                           "tokenizer": {"vocab_size": 512}},
        "pipeline": {"stages": {"clean": {"kind": "preprocess"}}}}))
    table = tmp_path / "stages/evaluate_aligned/out/0/0/results.csv"
    table.parent.mkdir(parents=True)
    table.write_text("task,metric,step,value\nclean_bpb,bits_per_byte,8,2.5\nclean_bpb,bits_per_byte,16,2.25\n")
    card = hub_card.render(tmp_path, "publish", 0, {"repo_id": "org/m", "repo_type": "model"}, "/src")
    assert "run `r1` (campaign `c1`)" in card and "`seed=2`" in card
    assert "Recipe `fineweb_like`: filters url;" in card
    assert "| evaluate_aligned | clean_bpb | bits_per_byte | 16 | 2.2500 |" in card and "| 8 |" not in card
    assert "secret-project" not in card  # cluster settings stay out


def test_the_files_a_publish_uploads(tmp_path):
    from jobs.adapters import hub_card

    for name in ("config.json", "model.safetensors", "README.md", "logs/x.txt", "optimizer.pt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    assert hub_card.files(tmp_path, [], ["*.pt", "logs/*"]) == ["config.json", "model.safetensors"]
    assert hub_card.files(tmp_path, ["*.json"], []) == ["config.json"]
    assert hub_card.files(tmp_path, [], [], limit=2) == ["config.json", "model.safetensors"]  # a folder before its subfolders


def test_launcher_plan_lists_a_sample_of_a_huge_source_and_never_raises(tmp_path):
    """Found by odd values through `launcher plan`: source=/ walked the whole filesystem and raised on
    /proc; a 300-character name raised ENAMETOOLONG."""
    from jobs.adapters import hub_card

    assert len(hub_card.files("/", [], [], limit=5)) == 5
    assert hub_card.files("x" * 300, [], []) == []


def test_an_align_stage_naming_a_hub_model_waits_for_the_fetch():
    points = sweep_points(["pipeline=align", "cluster=local", "cluster.hub_cache=/shared/hf",
                           "pipeline.vars.model=hf://Qwen/Qwen2.5-0.5B@main", "pipeline.vars.sft_data=/s.jsonl",
                           "pipeline.vars.dpo_data=/d.jsonl"], False)
    plan = build_plan([compose(p) for p in points], points)
    assert [(d.parent, d.kind) for d in plan.stages["sft"].deps] == [("hub_fetch", "afterok")]
    assert "hub_fetch" not in [d.parent for d in plan.stages["dpo"].deps]  # it reads {input:sft}
    assert plan.stages["hub_fetch"].payloads[0]["fetch"]["repos"] == ["hf://Qwen/Qwen2.5-0.5B@main"]
