"""Composition: every sweep point is exactly what Hydra's own composition of that point gives, and
`+`/`++` overrides meet the typed schema like YAML keys do."""
import json

import pytest
from omegaconf import OmegaConf

from launcher.config.compose import compose, compose_points, sweep_points
from launcher.errors import ConfigError

BASE = ["pipeline=smoke", "cluster=local"]
CK = "pipeline.stages.checkpointing"


def hydra_alone(point):
    """The reference: Hydra's compose API on this one point's override list, resolved."""
    from hydra import compose as hydra_compose

    cfg = hydra_compose(config_name="config", overrides=list(point))
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


def hydra_points(overrides):
    """The reference: the override lists Hydra's basic sweeper (`-m`) makes for each job."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
    return BasicSweeper.split_arguments(parser.parse_overrides(list(overrides)), None)[0]


def error_of(*overrides, multirun=False):
    with pytest.raises(ConfigError) as e:
        compose_points([*BASE, *overrides], multirun)
    return e.value


# --- each point composed from the same base, as Hydra composes it alone -------------------------------

def test_a_mapping_sweep_does_not_leak_into_the_next_point():
    _, configs = compose_points([*BASE, f"{CK}.params={{target: 5}},{{step_s: 0.1}}"], True)
    params = [c["pipeline"]["stages"]["checkpointing"]["params"] for c in configs]
    assert params == [{"target": 5, "step_s": 0.05, "force_requeue_at": 8},
                      {"target": 20, "step_s": 0.1, "force_requeue_at": 8}]


def test_a_mapping_sweep_over_a_datatrove_block_argument_does_not_leak():
    q = "data.filters.gopher_quality"
    _, configs = compose_points(["pipeline=data", "cluster=local", f"{q}={{min_doc_words: 10}},{{max_doc_words: 500}}"],
                                True)
    got = [(c["data"]["filters"]["gopher_quality"]["min_doc_words"], c["data"]["filters"]["gopher_quality"]["max_doc_words"])
           for c in configs]
    assert got == [(10, 100000), (50, 500)]


def test_a_later_override_still_wins_over_a_swept_one():
    # Hydra applies a point's overrides in the order given: the plain override after the sweep wins.
    _, configs = compose_points([*BASE, f"{CK}.params={{target: 5}},{{target: 6}}", f"{CK}.params.target=7"], True)
    assert [c["pipeline"]["stages"]["checkpointing"]["params"]["target"] for c in configs] == [7, 7]


# Group choices (a ConfigStore group and a glob over a file group), + on free-form maps, ~, interpolations.
GROUPS = [
    "pipeline=smoke",
    "cluster=local,dev",
    "data=glob(*,exclude=quality)",  # two recipes: 16 points (data=quality needs pipeline=quality_ablation)
    f"+{CK}.params={{target: 5}},{{step_s: 0.1, extra: [1, 2]}}",  # mappings (+: a new key in params)
    "+pipeline.vars.note=\"se,cond\",${pipeline.description}",     # a quoted string; an interpolation
    "~pipeline.stages.fanout",
]
# Only values swept (one defaults list for every point): mappings, lists, quoted strings, interpolations.
VALUES = [
    "pipeline=smoke",
    "cluster=local",
    f"{CK}.params={{target: 5}},{{step_s: 0.1}}",
    "pipeline.vars.scale=[1,2],['x=1', \"b c\"]",   # lists; quoted elements with = and a space
    "pipeline.description=\"a,b\",'c d'",
    "seed=3,4",
    "pipeline.vars.fail_once_task=${seed}",           # an interpolation of a swept key
    "+pipeline.vars.note=n",
    "~pipeline.stages.fanout",
    f"{CK}.params.force_requeue_at=null",             # after the swept mapping: wins
]


@pytest.mark.parametrize("overrides", [GROUPS, VALUES], ids=["groups", "values"])
def test_every_point_equals_hydras_own_composition_of_that_point_alone(overrides):
    points, configs = compose_points(overrides, True)
    assert points == hydra_points(overrides)
    assert len(points) == 16
    for point, cfg in zip(points, configs):
        # json: key order too (config/point-N.json is what tasks and reports read)
        assert json.dumps(cfg) == json.dumps(hydra_alone(point)), point
    assert all("fanout" not in c["pipeline"]["stages"] for c in configs)


# The paths a point's overrides take through the config: a top-level key, a key through a list, through
# an interpolated node (train.model is `${model}`), a new key then a key inside it, ++ on a typed field,
# a sweep whose second value is a mapping merged where the first was a number, a whole section replaced.
T = "pipeline.stages.train.train"
EDGES = {
    "top_level": ["pipeline=smoke", "cluster=local", "seed=1,2", "+campaign=a,b", "run_name=x"],
    "through_a_list": ["pipeline=data", "cluster=local", "data.filters.language.languages.0=fr,de",
                       "data.filters.gopher_repetition.top_n_grams.1=[5,0.5],[6,0.6]"],
    "through_an_interpolation": ["pipeline=train", "cluster=local", "pipeline.vars.data=/d", "pipeline.vars.tokenizer=/t",
                                 "model.hidden_size=32,64", f"++{T}.model.num_layers=3,4", f"{T}.optimizer.lr=0.1,0.2"],
    "nested_new_keys": ["pipeline=smoke", "cluster=local", "+pipeline.stages.reduce.params.a={b: 1}",
                        "+pipeline.stages.reduce.params.a.c=2,3", "++pipeline.stages.reduce.resources.cpus_per_task=2,3",
                        "pipeline.vars.scale=1,{k: v}"],
    "replaced_sections": ["pipeline=smoke", "cluster=local",
                          "pipeline.stages.checkpointing.requeue={max: 1},{max: 2, signal: TERM}",
                          "~pipeline.stages.reduce.params.expect_shards", "pipeline.stages.fanout.tasks=2"],
}


@pytest.mark.parametrize("name", list(EDGES))
def test_points_equal_hydras_own_whatever_path_their_overrides_take(name):
    overrides = EDGES[name]
    points, configs = compose_points(overrides, True)
    assert points == hydra_points(overrides) and len(points) > 1
    for point, cfg in zip(points, configs):
        assert json.dumps(cfg) == json.dumps(hydra_alone(point)), point


def test_the_swept_values_arrive_as_values():
    _, configs = compose_points(VALUES, True)
    got = {(json.dumps(c["pipeline"]["stages"]["checkpointing"]["params"]), json.dumps(c["pipeline"]["vars"]["scale"]),
            c["pipeline"]["description"], c["pipeline"]["vars"]["fail_once_task"]) for c in configs}
    params = ['{"target": 5, "step_s": 0.05, "force_requeue_at": null}',
              '{"target": 20, "step_s": 0.1, "force_requeue_at": null}']
    assert got == {(p, s, d, seed) for p in params for s in ["[1, 2]", '["x=1", "b c"]'] for d in ["a,b", "c d"]
                   for seed in [3, 4]}


def test_single_point_compose_equals_hydra():
    point = [*BASE, "+pipeline.stages.reduce.after.fanout=afterok", f"{CK}.params={{target: 5}}"]
    assert json.dumps(compose(point)) == json.dumps(hydra_alone(point))


# --- quoted values -----------------------------------------------------------------------------------

def test_a_quoted_sweep_value_arrives_unquoted():
    _, configs = compose_points([*BASE, 'pipeline.description="a,b",c'], True)
    assert [c["pipeline"]["description"] for c in configs] == ["a,b", "c"]


def test_quoted_list_elements_with_equals_and_space_arrive_as_strings():
    _, configs = compose_points([*BASE, "pipeline.vars.scale=['x=1','a b'],[\"c,d\",2]"], True)
    assert [c["pipeline"]["vars"]["scale"] for c in configs] == [["x=1", "a b"], ["c,d", 2]]


def test_a_quoted_sweep_value_reaches_a_command_as_text():
    _, configs = compose_points([*BASE, "pipeline.stages.fanout.command='echo \"a b\"',\"echo 'c=d'\""], True)
    assert [c["pipeline"]["stages"]["fanout"]["command"] for c in configs] == ['echo "a b"', "echo 'c=d'"]


# --- every sweep form Hydra documents ------------------------------------------------------------------

@pytest.mark.parametrize("sweep, values", [
    ("data=glob(*)", ["fineweb_like", "quality", "raw"]),
    ("data=glob(*,exclude=[raw,quality])", ["fineweb_like"]),
    ("cluster=glob(dev-*)", ["dev-mn", "dev-noacct"]),
    ("cluster=glob(*,exclude=[dev*,example*,*-gpu])", ["local"]),
    ("pipeline.vars.scale=range(1,4)", ["1", "2", "3"]),
    ("pipeline.vars.scale=range(0,1,0.5)", ["0.0", "0.5"]),
    ("pipeline.vars.scale=choice(3,1)", ["3", "1"]),
    ("pipeline.vars.scale=sort(3,1,2)", ["1", "2", "3"]),
    ("pipeline.vars.scale=sort(3,1,2,reverse=true)", ["3", "2", "1"]),
    ("pipeline.vars.scale=tag(a,choice(1,2))", ["1", "2"]),
])
def test_sweep_forms_expand_like_hydras_multirun(sweep, values):
    key = sweep.split("=", 1)[0]
    points = sweep_points([*BASE, sweep], True)
    assert points == hydra_points([*BASE, sweep])
    assert [p[-1] for p in points] == [f"{key}={v}" for v in values]


def test_a_glob_sweep_composes_each_option():
    _, configs = compose_points([*BASE, "data=glob(*)"], True)
    assert [c["data"]["recipe"] for c in configs] == ["fineweb_like", "quality", "raw"]


def test_shuffle_keeps_the_points():
    points = sweep_points([*BASE, "pipeline.vars.scale=shuffle(range(20))"], True)
    assert sorted(int(p[-1].split("=")[1]) for p in points) == list(range(20))


def test_interval_is_not_a_grid():
    e = error_of("pipeline.stages.reduce.params.lr=interval(0.1,1.0)", multirun=True)
    assert (e.stage, e.key) == ("reduce", "pipeline.stages.reduce.params.lr")
    assert "interval" in e.message and "range(" in e.message


@pytest.mark.parametrize("sweep, key, fragment", [
    ("pipeline.vars.scale=glob(*)", "pipeline.vars.scale", "not a config group"),
    ("data=glob(nope*)", "data", "matches no option"),
    ("pipeline.vars.scale=range(0)", "pipeline.vars.scale", "no values"),
])
def test_a_sweep_without_points_is_an_error(sweep, key, fragment):
    e = error_of(sweep, multirun=True)
    assert e.key == key and fragment in e.message


# --- + and ++ meet the typed schema ----------------------------------------------------------------------

@pytest.mark.parametrize("override, stage, key, near", [
    ("+pipeline.stages.shards.resources.gpus_per_nodes=4", "shards", "pipeline.stages.shards.resources.gpus_per_nodes",
     "gpus_per_node"),
    ("++pipeline.stages.shards.resources.gpus_per_nodes=4", "shards", "pipeline.stages.shards.resources.gpus_per_nodes",
     "gpus_per_node"),
    ("++cluster.max_array_sise=10", None, "cluster.max_array_sise", "max_array_size"),
    ("+pipeline.stages.shards.resourcez.gpus_per_node=1", "shards", "pipeline.stages.shards.resourcez", "resources"),
    ("+pipeline.stages.checkpointing.requeue.signal_delay=5", "checkpointing",
     "pipeline.stages.checkpointing.requeue.signal_delay", "signal_delay_s"),
    ("+pipeline.stages.shards.train.optimizer.warmup=5", "shards", "pipeline.stages.shards.train.optimizer.warmup",
     "warmup_steps"),
    ("+model.hiden_size=3", None, "model.hiden_size", "hidden_size"),
    ("+pipeline.descripton=x", None, "pipeline.descripton", "description"),
    ("+run_nam=x", None, "overrides", "run_name"),  # a root key: reported under `overrides`
    ("+pipeline.stages.shards.align.lora={enabled: true, rank: 4}", "shards",
     "pipeline.stages.shards.align.lora.rank", None),
])
def test_a_plus_key_the_schema_does_not_have_is_refused(override, stage, key, near):
    e = error_of(override)
    assert (e.stage, e.key) == (stage, key)
    assert "not in '" in e.message
    if near:
        assert f"did you mean '{near}'?" in e.message


def test_a_plus_key_in_a_sweep_is_refused_too():
    e = error_of("+pipeline.stages.shards.resources.gpus_per_nodes=1,2", multirun=True)
    assert e.key == "pipeline.stages.shards.resources.gpus_per_nodes" and "gpus_per_node" in e.message


def test_an_unknown_plain_key_under_a_typed_node_does_not_suggest_plus():
    # Hydra's own message says "To append to your config use +...": under a typed node that is wrong.
    e = error_of("pipeline.stages.shards.resources.gpus_per_nodes=4")
    assert e.key == "pipeline.stages.shards.resources.gpus_per_nodes"
    assert "did you mean 'gpus_per_node'?" in e.message and "use +" not in e.message


@pytest.mark.parametrize("override, path, value", [
    ("+pipeline.stages.shards.env.MY_VAR=1", "pipeline.stages.shards.env.MY_VAR", "1"),
    ("++pipeline.vars.new=2", "pipeline.vars.new", 2),
    ("+pipeline.stages.reduce.params.a.b=3", "pipeline.stages.reduce.params.a.b", 3),
    ("+pipeline.stages.shards.after.checkpointing=afterok", "pipeline.stages.shards.after.checkpointing", "afterok"),
    ("+data.filters.mine={_target_: my.Filter, x: 1}", "data.filters.mine.x", 1),
    ("+pipeline.stages.shards.train.nanotron.general.project=p", "pipeline.stages.shards.train.nanotron.general.project",
     "p"),
    ("+pipeline.stages.shards.align.trl.packing=true", "pipeline.stages.shards.align.trl.packing", True),
    ("+cluster.env.X=y", "cluster.env.X", "y"),
    ("+pipeline.stages={extra: {kind: command, command: 'echo hi', after: {shards: afterok}}}",
     "pipeline.stages.extra.after.shards", "afterok"),
    ("+cluster.environments={x: {python: /usr/bin/python3}}", "cluster.environments.x.python", "/usr/bin/python3"),
    ("+pipeline.stages.shards.resources.partition=debug", "pipeline.stages.shards.resources.partition", "debug"),
])
def test_free_form_maps_and_schema_fields_accept_plus(override, path, value):
    cfg = compose([*BASE, override])
    assert OmegaConf.select(OmegaConf.create(cfg), path) == value


@pytest.mark.parametrize("override, key", [
    ("+pipeline.stages.extra={kind: command, command: 'echo a'}", "pipeline.stages.extra"),
    ("+pipeline.stages.extra.kind=command", "pipeline.stages.extra"),
    ("++cluster.environments.x={python: /usr/bin/python3}", "cluster.environments.x"),
])
def test_adding_a_typed_map_entry_by_its_own_key_names_the_form_that_works(override, key):
    # OmegaConf cannot assign a plain mapping to one entry of a Dict[str, Stage] (Hydra fails the same way):
    # the error gives the merge form that works instead of "dict is not a subclass of Stage", and it works.
    e = error_of(override)
    assert e.key == key and "merge it into the map instead" in e.message
    suggestion = e.message.rsplit("instead: ", 1)[1].strip("'")
    cfg = compose([*BASE, suggestion])
    assert OmegaConf.select(OmegaConf.create(cfg), override.lstrip("+").split("=")[0]) is not None


@pytest.mark.parametrize("override, near", [
    ("pipeline=smok", "smoke"), ("cluster=dve", "dev"), ("data=fineweb", "fineweb_like"), ("model=1bb", "1b"),
])
def test_an_unknown_group_option_gets_the_closest_one(override, near):
    with pytest.raises(ConfigError) as e:
        compose_points([override], False)
    msg = e.value.message
    group = override.split("=")[0]
    assert f"Could not find '{override.replace('=', '/')}'; did you mean '{near}'?" in msg
    assert f"(options in '{group}': " in msg and "schema" not in msg and "\n" not in msg


def test_compose_plain_types_a_config_made_elsewhere_like_compose():
    """compose_plain (the Hydra launcher plugin: no Hydra composition of ours inside the user's app):
    the schema's defaults and types, the profile by name, resolved; the key of what is wrong."""
    from launcher.config.compose import compose_plain

    stage = {"kind": "command", "command": "echo ${pipeline.name}", "resources": {"time": "5"}}
    cfg = compose_plain({"pipeline": {"name": "p", "stages": {"s": stage}}, "cluster": "local", "run_root": "/r"})
    ref = compose(BASE)
    assert cfg["cluster"] == ref["cluster"] and cfg["run_root"] == "/r" and cfg["sweep"] == ref["sweep"]
    s = cfg["pipeline"]["stages"]["s"]
    assert s["command"] == "echo p" and s["resources"]["time"] == "5" and s["requeue"] == {
        "max": 3, "signal": "USR2", "signal_delay_s": 90, "term_grace_s": 25}
    with pytest.raises(ConfigError) as e:
        compose_plain({"pipeline": {"name": "p", "stages": {"s": {**stage, "resources": {"tme": "5"}}}},
                       "cluster": "local"})
    assert e.value.key == "pipeline.stages.s.resources.tme" and "did you mean 'time'?" in e.value.message
    with pytest.raises(ConfigError) as e:
        compose_plain({"pipeline": {"name": "p"}, "cluster": "nope"})
    assert e.value.key == "cluster" and "no cluster profile 'nope'" in e.value.message
