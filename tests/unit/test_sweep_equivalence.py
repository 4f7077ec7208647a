"""Randomized sweeps against Hydra, point by point: compose_each's shortcuts (a later point patched on the
reference's kept config, only changed keys and their dependent interpolations resolved again, text
templates rendered without OmegaConf's grammar, plain override texts parsed without ANTLR) must give
every point exactly what Hydra's composition of that point alone gives, and a value Hydra refuses the
same ConfigError as the point composed alone. Seeded: a failure names its seed and its points."""
import itertools
import json
import random

import pytest

from launcher.config import compose
from launcher.errors import ConfigError
from test_compose import hydra_alone

pytestmark = pytest.mark.unit

CK = "pipeline.stages.checkpointing"
# key -> values a sweep picks from: each type the schema has (int, float, Optional[float], str, bool, an
# enum, free-form Any), convertible texts ("3" into an int), refused ones, nulls, quotes and spaces,
# interpolations (of another swept key, two keys, resolvers, an escaped one), lists and mappings.
VALUES = {
    "seed": ["1", "2", "7", '"3"', "-0"],
    "pipeline.vars.scale": ["1", "2", "1.5", "null", "true", "x", "'a b'", "'x${seed}'", "${seed}", "[1,2]",
                            "{a: 1}", "\"q'uote\"", "1e-3", "'${oc.select:seed,0}'", "'\\${seed}'", "nan"],
    "pipeline.vars.fail_once_task": ["-1", "1", "'${pipeline.vars.scale}'", "'${oc.env:HOME}'"],
    "pipeline.description": ["plain", "'c d'", "'x${seed}'", "'${pipeline.vars.scale}-${seed}'", "3",
                             "'${pipeline.stages.reduce.after.shards}'"],
    f"{CK}.params.target": ["5", "6", "'${seed}'", "null", "[1, '${seed}']"],
    f"{CK}.resources.time": ["00:03:00", "'00:04:00'"],
    f"{CK}.resources.mem_gb": ["1", "2.5", "null", '"4"'],
    "pipeline.stages.reduce.after.shards": ["afterok", "afterany"],
    "wait": ["true", "false", "'yes'"],
    "poll_s": ["0", "1", "2.5", '"3"'],
    "run_name": ["null", "r1", "'${seed}'", "'${pipeline.vars.scale}'"],
    "model.hidden_size": ["64", "128", '"32"'],
    "pipeline.vars": ["{scale: 9}", "{scale: 2, fail_once_task: '${seed}'}"],  # the parent of a swept key
    "pipeline.stages.shards.tasks": ["4", "2"],
    "run_root": ["a", "'r ${seed}'", "'${oc.env:LAUNCHER_RUN_ROOT,runs}'"],  # an interpolation in the base
}
# Values the typed schema refuses: a sweep sometimes holds one (the same error as the point alone).
REFUSED = {"seed": ["abc", "1.5"], f"{CK}.resources.mem_gb": ["abc"], "pipeline.stages.reduce.after.shards": ["bogus"],
           "model.hidden_size": ["'x${seed}'"], "pipeline.description": ["null"], "wait": ["2"],
           "pipeline.vars.scale": ["'${pipeline.vars.nope}'", "???", "'${oc.env:LAUNCHER_NO_SUCH_VAR}'"]}
# Overrides every point of a sweep may carry: additions (one an interpolation of swept keys), deletions,
# a relative interpolation, hydra.job.env_set, a list holding an interpolation.
EXTRAS = ["+pipeline.vars.note=${seed}", "+pipeline.vars.items=[x,'${pipeline.vars.scale}']",
          "~pipeline.stages.fanout", f"~{CK}.params.force_requeue_at", f"+{CK}.params.rel='${{..resources.time}}'",
          "+hydra.job.env_set.SEED=${seed}", "+pipeline.vars.note2=d${pipeline.vars.scale}/${run_name}",
          "+pipeline.vars.dyn='x${oc.select:${oc.select:pipeline.vars.which,seed},0}'",  # a computed key: seed
          "+pipeline.vars.k-1=${pipeline.vars.scale}", "+pipeline.vars.t-2='a${pipeline.vars.k-1}b${seed}'"]
FREE = ("pipeline.vars.", f"{CK}.params.")  # free-form maps: a `~` there is no schema error


# pipeline=demo: a data recipe's blocks in lists (${data.filters} inside a list), an interpolation in the
# base (data.source: ${abspath:...}, read by data.reader.data_folder), a filter set to null and back.
DEMO = {
    "data.filters.gopher_quality.min_doc_words": ["10", "20", "'${pipeline.vars.docs}'"],
    "data.source": ["a", "'${abspath:x}'", "'s ${seed}'"],
    "data.filters.c4_quality": ["null", "{}", "{min_num_sentences: 3}"],
    "data.reader.data_folder": ["b", "'${data.source}/x'"],
    "pipeline.vars.docs": ["5", "6", '"7"'],
    "pipeline.vars.tokens": ["1024", "'${pipeline.vars.docs}'"],
    "seed": ["1", "2"],
}


def _sweep(rng: random.Random, values=None, base=("pipeline=smoke", "cluster=local"), extras=None) -> list:
    """The points of one random sweep: a grid over 1-3 keys (first key outermost, as Hydra's sweeper),
    sometimes shuffled, sometimes with one point's override list changed (a `~`, a `++`, a value dropped
    or set twice) so that neighbours differ in their lists, not only in values."""
    values = VALUES if values is None else values
    keys = rng.sample(sorted(values), rng.randint(1, 3))  # at most 8 points (the grid cut): ~1 s a sweep
    extras = rng.sample(EXTRAS if extras is None else extras, rng.randint(0, 2))
    grid = [[f"{k}={v}" for v in rng.sample(values[k], min(len(values[k]), rng.randint(2, 3)))] for k in keys]
    if rng.random() < 0.15 and keys[-1] in REFUSED:  # a refused value in a later point of the grid
        grid[-1].append(f"{keys[-1]}={rng.choice(REFUSED[keys[-1]])}")
    points = [[*base, *extras[:1], *p, *extras[1:]] for p in itertools.product(*grid)][:8]
    if rng.random() < 0.3:
        rng.shuffle(points)
    if rng.random() < 0.5:
        point = rng.choice(points)
        i = rng.randrange(2, len(point))
        key, _, value = point[i].partition("=")
        key = key.lstrip("+~")
        point[i] = rng.choice([f"~{key}" if key.startswith(FREE) else point[i], f"++{key}={value}", point[i]])
        if rng.random() < 0.3:
            point.append(point[i])
        elif rng.random() < 0.2:
            del point[i]  # this point's list is shorter than its neighbours'
    return points


def _check(points) -> None:
    try:
        configs = compose.compose_each(points)
    except ConfigError as e:
        for point in points:  # the first point that fails alone must fail with the same error
            try:
                compose.compose(point)
            except ConfigError as alone:
                assert str(e) == str(alone), (str(e), str(alone), point)
                return
        raise AssertionError(f"the sweep fails ({e}) where every point alone composes") from e
    for point, cfg in zip(points, configs):
        mine = {k: v for k, v in cfg.items() if k != "hydra"}
        assert json.dumps(mine) == json.dumps(hydra_alone(point)), point  # key order too
        if "hydra" in cfg:
            assert cfg["hydra"] == compose.compose(point)["hydra"], point


@pytest.mark.parametrize("seed", range(3))
def test_random_sweeps_equal_hydra_point_by_point(seed):
    compose._initialize()
    rng = random.Random(seed)
    for _ in range(3):
        points = _sweep(rng)
        try:
            _check(points)
        except AssertionError as e:
            raise AssertionError(f"seed {seed}: {points}: {e}") from e


@pytest.mark.parametrize("seed", range(1))
def test_random_sweeps_of_the_demo_pipeline_equal_hydra(seed):
    compose._initialize()
    rng = random.Random(100 + seed)
    for _ in range(2):
        points = _sweep(rng, DEMO, ("pipeline=demo", "cluster=local"), ["~data.filters.url", "seed=3", "+pipeline.vars.extra=${data.tasks}"])
        try:
            _check(points)
        except AssertionError as e:
            raise AssertionError(f"seed {seed}: {points}: {e}") from e


def test_a_deleted_key_set_again_by_a_later_point():
    """The reference point deletes a key (`~`) that the next point sets: Hydra sets it on the base, which
    has it; the patched kept config (the reference's) no longer has it: 'Key target is not in struct'."""
    compose._initialize()
    _check([["pipeline=smoke", "cluster=local", f"~{CK}.params.target", "seed=1"],
            ["pipeline=smoke", "cluster=local", f"{CK}.params.target=3", "seed=2"],
            ["pipeline=smoke", "cluster=local", f"{CK}.params.target=4", "seed=3"]])


@pytest.mark.parametrize("text", ["x${${pipeline.vars.which}}", "${oc.select:${pipeline.vars.which},0}",
                                  "${pipeline.${pipeline.vars.part}}"])
def test_an_interpolation_whose_key_is_computed_follows_the_swept_key(text):
    """A key computed by a nested interpolation (which=seed: the text names `pipeline.vars.which`, its value
    depends on seed): a later point resolved it from the reference (stale: 'x1' where Hydra gives 'x2')."""
    compose._initialize()
    fixed = ["pipeline=smoke", "cluster=local", "+pipeline.vars.which=seed", "+pipeline.vars.part=vars.scale",
             f"+pipeline.vars.dyn='{text}'"]
    _check([[*fixed, "seed=1", "pipeline.vars.scale=1"], [*fixed, "seed=2", "pipeline.vars.scale=2"]])


def test_an_override_hydra_cannot_parse_is_a_config_error_for_one_point_too():
    """compose() of one point (launcher config, schedule) with an unparsable text: Hydra's parse_override
    raises a bare HydraException; the error must be the OverrideError that compose_points gives."""
    with pytest.raises(ConfigError) as one:
        compose.compose(["pipeline=smoke", "cluster=local", "seed=${a}}"])
    with pytest.raises(ConfigError) as swept:
        compose.compose_points(["pipeline=smoke", "cluster=local", "seed=${a}}"], False)
    assert str(one.value) == str(swept.value) and "seed=${a}}" in str(one.value)


@pytest.mark.parametrize("bad", ["pipeline.vars.scale=${pipeline.vars.nope}", "pipeline.vars.scale=${pipeline.vars.scale}",
                                 "seed=???"])
def test_a_value_that_fails_to_resolve_names_the_key_the_point_alone_names(bad):
    """A later point whose value cannot be resolved: the point alone fails at the first key of the config
    that uses it (stage 'shards': pipeline.stages.shards.command); resolved from the reference it named the
    changed key itself (pipeline.vars.scale: Interpolation key 'pipeline.vars.nope' not found)."""
    compose._initialize()
    key = bad.split("=")[0]
    fixed = ["pipeline=smoke", "cluster=local", "+pipeline.vars.x=${seed}"]
    _check([[*fixed, f"{key}=1", "run_name=a"], [*fixed, f"{key}=1", "run_name=b"], [*fixed, bad, "run_name=b"]])
