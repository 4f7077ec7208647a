"""A sweep point resolved from its neighbour (launcher/config/incremental.py) equals Hydra's own
composition of that point, and only the first point of a config-group set is resolved in full."""
import json

import pytest

from launcher.config import compose, incremental
from test_compose import hydra_alone, hydra_points

pytestmark = pytest.mark.unit

CK = "pipeline.stages.checkpointing"
SWEEPS = {
    # the swept value reaches a command through ${pipeline.vars.scale}; a deletion common to every point
    "interpolated_into_a_command": ["pipeline=smoke", "cluster=local", "pipeline.vars.scale=range(5)",
                                    "~pipeline.stages.fanout"],
    # a chain: run_name <- description <- a swept var; a list holding an interpolation; a missing value
    "chain_list_and_missing": ["pipeline=smoke", "cluster=local", "seed=1,2,3",
                               "+pipeline.vars.note=${seed}", "pipeline.description=d${pipeline.vars.note}",
                               f"+{CK}.env.A='${{seed}}'", "+pipeline.vars.later=???",
                               "+pipeline.vars.items=[x,'${seed}']"],
    # a relative interpolation (always resolved again) and an enum-typed field (to its name)
    "relative_and_enum": ["pipeline=smoke", "cluster=local", "pipeline.vars.scale=4,5",
                          f"+{CK}.params.rel='${{..resources.time}}'", f"{CK}.resources.time=00:03:00,00:04:00",
                          "pipeline.stages.reduce.after.shards=afterok,afterany"],
    # a mapping value swept: its whole subtree replaced, key order kept
    "mapping_values": ["pipeline=smoke", "cluster=local", f"{CK}.params={{target: 5}},{{step_s: 0.1, target: 6}}"],
    # a grid: the third point sets scale back while seed moves on (the patched config must follow it back)
    "grid_that_goes_back": ["pipeline=smoke", "cluster=local", "seed=1,2", "pipeline.vars.scale=3,4",
                            "pipeline.stages.reduce.after.shards=afterok,afterany"],
    # a swept value that is an interpolation for one point and a plain string for the next
    "interpolation_then_plain": ["pipeline=smoke", "cluster=local", "pipeline.description=plain,'x${seed}',other",
                                 "seed=5,6"],
    # two swept keys in one command text (incremental.TextTemplate), one of them back and forth
    "command_of_two_swept_keys": ["pipeline=smoke", "cluster=local", "pipeline.vars.scale=2,3",
                                  "pipeline.vars.fail_once_task=-1,1"],
}
PATCHED = {"command_of_two_swept_keys", "interpolated_into_a_command", "chain_list_and_missing", "grid_that_goes_back", "interpolation_then_plain", "relative_and_enum"}


@pytest.mark.parametrize("name", list(SWEEPS))
def test_a_point_resolved_from_its_neighbour_equals_hydras_own(name, monkeypatch):
    full, applied = [], []
    original, apply = compose._finish_point, compose._apply_point
    monkeypatch.setattr(compose, "_finish_point", lambda *a: full.append(1) or original(*a))
    monkeypatch.setattr(compose, "_apply_point", lambda *a: applied.append(1) or apply(*a))
    overrides = SWEEPS[name]
    points, configs = compose.compose_points(overrides, True)
    assert points == hydra_points(overrides) and len(points) > 1
    for point, cfg in zip(points, configs):
        assert json.dumps(cfg) == json.dumps(hydra_alone(point)), point  # key order too
    assert len(full) == 1  # the first point in full, every other one from it
    # plain values: the later points patch the reference's config instead of a copy of the base
    assert len(applied) == (1 if name in PATCHED else len(points)), (name, len(applied))


def test_points_that_set_variables_through_hydra_env_set_are_resolved_in_full(monkeypatch):
    full, applied = [], []
    original, apply = compose._finish_point, compose._apply_point
    monkeypatch.setattr(compose, "_finish_point", lambda *a: full.append(1) or original(*a))
    monkeypatch.setattr(compose, "_apply_point", lambda *a: applied.append(1) or apply(*a))
    _, configs = compose.compose_points(["pipeline=smoke", "cluster=local", "seed=1,2",
                                         "+hydra.job.env_set.SEED=${seed}"], True)
    assert [c["hydra"]["job"]["env_set"]["SEED"] for c in configs] == ["1", "2"] and len(full) == 2


def test_a_plus_override_under_a_swept_key_is_resolved_in_full(monkeypatch):
    full, applied = [], []
    original, apply = compose._finish_point, compose._apply_point
    monkeypatch.setattr(compose, "_finish_point", lambda *a: full.append(1) or original(*a))
    monkeypatch.setattr(compose, "_apply_point", lambda *a: applied.append(1) or apply(*a))
    overrides = ["pipeline=smoke", "cluster=local", f"{CK}.params={{target: 5}},{{target: 6}}", f"+{CK}.params.x=1"]
    points, configs = compose.compose_points(overrides, True)
    assert [c["pipeline"]["stages"]["checkpointing"]["params"]["target"] for c in configs] == [5, 6]
    for point, cfg in zip(points, configs):
        assert json.dumps(cfg) == json.dumps(hydra_alone(point)), point
    assert len(full) == 2


def test_the_points_share_what_their_overrides_cannot_change():
    _, configs = compose.compose_points(["pipeline=smoke", "cluster=local", "seed=1,2"], True)
    assert configs[0]["cluster"] is configs[1]["cluster"]  # not copied: written once as the reference
    assert configs[0]["pipeline"]["vars"] is configs[1]["pipeline"]["vars"]


def test_dependent_follows_chains_lists_and_refuses_to_guess_relative_or_hydra_nodes():
    interps = [(("a",), "${b}"), (("b",), "x${c.d}"), (("e",), "${f}"), (("l",), "${c}"),
               (("r",), "${.s}"), (("h",), "${hydra:job.num}"), (("n",), "${oc.env:HOME,${c.d.e}}")]
    assert set(incremental.dependent(interps, {"c.d"})) == {("a",), ("b",), ("l",), ("r",), ("h",), ("n",)}
    assert set(incremental.dependent(interps, {"z"})) == {("r",), ("h",)}


def test_interpolations_inside_a_list_resolve_the_whole_list():
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"x": 1, "l": [{"a": "${x}"}, 2], "m": {"k": "${x}"}, "hydra": {"v": "${x}"}})
    assert sorted(incremental.interpolations(cfg)) == [(("l",), "${x}"), (("m", "k"), "${x}")]


def test_a_text_template_renders_what_omegaconf_resolves():
    """incremental.TextTemplate: text with absolute `${key}`s is resolved without OmegaConf's visitor, to
    OmegaConf's own string (str() of each node: an enum, a float, a bool, None, quotes and shell `$`);
    everything else is left to OmegaConf (None)."""
    import enum
    from dataclasses import dataclass, field
    from typing import Any, Optional

    from omegaconf import OmegaConf

    class Color(enum.Enum):
        RED = 1

    @dataclass
    class Vars:
        c: Color = Color.RED
        f: float = 1e-5
        b: bool = True
        i: int = 3
        n: Optional[int] = None
        s: Any = "a'b\"c"
        m: Any = "???"
        chain: Any = "${vars.i}"
        d: Any = field(default_factory=lambda: {"k": 1})

    @dataclass
    class Root:
        vars: Vars = field(default_factory=Vars)
        cmd: str = 'run ${vars.c} ${vars.f} ${vars.b} ${vars.i} ${vars.n} "${vars.s}" $x $(( 1 )) {}'
        lone: Any = "${vars.i}"
        escaped: Any = "\\${vars.i} and ${vars.i}"
        resolver: Any = "${oc.env:HOME} ${vars.i}"
        relative: Any = "${.lone} x"
        chained: Any = "x ${vars.chain}"
        missing: Any = "x ${vars.m}"
        container: Any = "x ${vars.d}"

    cfg = OmegaConf.structured(Root)
    t = incremental.TextTemplate.of(cfg, ("cmd",))
    assert t.render(cfg) == cfg.cmd == "run Color.RED 1e-05 True 3 None \"a'b\\\"c\" $x $(( 1 )) {}".replace("\\", "")
    cfg.vars.f, cfg.vars.i = 0.5, 7  # another point's values
    assert t.render(cfg) == cfg.cmd and "0.5 True 7" in cfg.cmd
    for path in ("lone", "escaped", "resolver", "relative"):
        assert incremental.TextTemplate.of(cfg, (path,)) is None, path
    for path in ("chained", "missing", "container"):  # a template, but its reference is resolved by OmegaConf
        assert incremental.TextTemplate.of(cfg, (path,)).render(cfg) is None, path
    cfg.cmd = "other ${vars.i}"  # the point changed the text itself
    assert t.render(cfg) is None


def test_a_bad_value_in_a_patched_point_is_refused_in_hydras_words():
    """A later point's value that its typed node refuses (seed: int) fails on the patched config as the
    point composed alone fails: the same ConfigError, naming the key."""
    from launcher.errors import ConfigError

    with pytest.raises(ConfigError) as swept:
        compose.compose_points(["pipeline=smoke", "cluster=local", "seed=1,2,abc"], True)
    with pytest.raises(ConfigError) as alone:
        compose.compose(["pipeline=smoke", "cluster=local", "seed=abc"])
    assert str(swept.value) == str(alone.value) and "seed" in str(swept.value), (str(swept.value), str(alone.value))


def test_set_value_node_equals_setattr_for_every_kind_of_value_node():
    """incremental.set_value_node sets what setattr sets, or raises what it raises, or leaves the value
    to setattr (False): typed nodes (int, float, bool, str, enum, Optional), AnyNode, and values that
    are interpolations, ???, None, containers or of another type."""
    import copy
    import enum
    from dataclasses import dataclass, field
    from typing import Any, Optional

    from omegaconf import OmegaConf

    from launcher.config.incremental import set_value_node

    class Color(enum.Enum):
        red = 1
        blue = 2

    @dataclass
    class Typed:
        i: int = 1
        f: float = 1.5
        b: bool = False
        s: str = "x"
        c: Color = Color.red
        o: Optional[int] = None
        a: Any = 3
        d: dict = field(default_factory=dict)

    values = [2, 2.5, "7", "abc", True, "true", "blue", "${i}", "???", None, [1], {"k": 1}, 0.0, ""]
    for key in ("i", "f", "b", "s", "c", "o", "a", "d"):
        for value in values:
            base = OmegaConf.structured(Typed)
            mine, theirs = copy.deepcopy(base), copy.deepcopy(base)
            try:
                setattr(theirs, key, value)
                expected = ("ok", OmegaConf.to_container(theirs))
            except Exception as e:  # noqa: BLE001 - the exception type is what is compared
                expected = ("error", type(e).__name__)
            try:
                if not set_value_node(mine, key, value):
                    setattr(mine, key, value)
                got = ("ok", OmegaConf.to_container(mine))
            except Exception as e:  # noqa: BLE001
                got = ("error", type(e).__name__)
            if expected[0] == "error" and got[0] == "error":
                continue  # Hydra's path raises its own error after ours (compose._Reference._set)
            assert got == expected, (key, value)
    frozen = OmegaConf.structured(Typed)
    OmegaConf.set_readonly(frozen, True)
    assert not set_value_node(frozen, "i", 5) and frozen.i == 1
