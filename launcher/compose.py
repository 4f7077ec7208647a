"""Hydra composition: overrides (and multirun sweeps) → one resolved config per sweep point."""
from __future__ import annotations

import contextlib
import functools
import os
import re
from pathlib import Path
from typing import List, Sequence

from launcher.errors import ConfigError, OverrideError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = Path(os.environ.get("LAUNCHER_CONF_DIR", PROJECT_ROOT / "conf"))
PROFILES_DIR = Path(os.environ.get("LAUNCHER_PROFILES_DIR", PROJECT_ROOT / "cluster_profiles"))


def available_profiles() -> List[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def _register() -> None:
    """Put the schema and every cluster profile into Hydra's ConfigStore (group `cluster`),
    so `cluster=dev` and `cluster.partition=...` compose like any other group, type-checked."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    from launcher.schema import Cluster, Config, Model, Pipeline

    # ${abspath:data/x}: tasks run elsewhere, so relative paths are fixed against the submitting directory.
    OmegaConf.register_new_resolver("abspath", lambda p: os.path.abspath(os.path.expanduser(str(p))), replace=True)
    cs = ConfigStore.instance()
    cs.store(name="schema", node=Config)
    cs.store(group="pipeline", name="schema", node=Pipeline)
    cs.store(group="model", name="schema", node=Model)
    for name in available_profiles():
        try:
            profile = OmegaConf.merge(OmegaConf.structured(Cluster), OmegaConf.load(PROFILES_DIR / f"{name}.yaml"))
        except Exception as e:  # noqa: BLE001 - report which file is broken, with OmegaConf's words
            raise ConfigError(f"cluster profile {PROFILES_DIR / name}.yaml is invalid: {e}", key="cluster") from e
        cs.store(group="cluster", name=name, node=profile)


def compose_plain(config: dict) -> dict:
    """One point's config from plain values, without Hydra's composition (for a caller that runs inside
    another Hydra app, whose global Hydra this must not touch: the launcher plugin). `config` holds the
    root keys, with `cluster` the name of a profile (cluster_profiles/<name>.yaml). Typed by the schema
    like `compose`, resolved, as plain dicts; ConfigError names the key."""
    from omegaconf import OmegaConf

    from launcher.schema import Cluster, Config

    if not OmegaConf.has_resolver("abspath"):
        OmegaConf.register_new_resolver("abspath", lambda p: os.path.abspath(os.path.expanduser(str(p))))
    name = str(config.get("cluster"))
    path = PROFILES_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"no cluster profile '{name}' (profiles in {PROFILES_DIR}: "
                          f"{', '.join(available_profiles())})", key="cluster")
    try:
        profile = OmegaConf.merge(OmegaConf.structured(Cluster), OmegaConf.load(path))
    except Exception as e:  # noqa: BLE001 - report which file is broken, with OmegaConf's words
        raise ConfigError(f"cluster profile {path} is invalid: {e}", key="cluster") from e
    config = {**config, "cluster": profile}
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(Config), config)
    except Exception as e:  # noqa: BLE001 - OmegaConf's ValidationError and friends, with the key
        raise _composition_error(e) from e
    return _plain(cfg)


def _config_loader():
    """Hydra's config loader (initialized once per process): glob() sweeps list a group's options with it."""
    from hydra.core.global_hydra import GlobalHydra

    _initialize()
    return GlobalHydra.instance().config_loader()


def _parser():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create(config_loader=_config_loader())


def sweep_points(overrides: Sequence[str], multirun: bool) -> List[List[str]]:
    """Expand Hydra sweep syntax into one override list per point, exactly as Hydra's basic sweeper
    (`-m`) does: `a=1,2 b=x,y` (the cartesian product, first key outermost), range(), choice(), glob()
    over a config group's options (with exclude=), sort(), shuffle(), tag(). Values keep Hydra's own
    string form (quotes included), so each point is later parsed as Hydra parses it.

    Raises ConfigError (key named) for: a parse error; a sweep without -m; interval() (a continuous
    range, for optimizing sweepers: the basic sweeper cannot enumerate it); glob() on a key that is not
    a config group or matching no option; a sweep with no values."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.object_type import ObjectType
    from hydra.core.override_parser.types import ValueType
    from hydra.errors import HydraException, OverrideParseException

    try:
        parsed = _parser().parse_overrides(list(overrides))
    except OverrideParseException as e:
        raise OverrideError(f"invalid override: {e}", key="overrides") from e
    sweeps = [o for o in parsed if o.is_sweep_override()]
    if not multirun:
        if sweeps:
            raise OverrideError(f"sweep override(s) {[o.input_line for o in sweeps]} need -m/--multirun; a value "
                                f"with a comma in it (a partition list, mail types) is quoted: \"key='a,b'\"",
                                key="overrides")
        return [list(overrides)]
    for o in sweeps:
        key = o.key_or_group
        if o.is_interval_sweep():
            raise _located(f"{o.input_line}: interval() is a continuous range, not a grid of points: Hydra's basic "
                           f"sweeper (-m) cannot enumerate it (it is for optimizing sweepers); list the values with "
                           f"range(start, stop, step), choice(...) or a,b,c", key)
        try:
            values = list(o.sweep_string_iterator())
        except HydraException as e:
            raise _located(f"invalid sweep {o.input_line}: {e}", key) from e
        if o.value_type == ValueType.GLOB_CHOICE_SWEEP:
            loader = _config_loader()
            if not loader.repository.group_exists(key):
                groups = [g for g in loader.get_group_options("", results_filter=ObjectType.GROUP)
                          if g != "hydra" and loader.get_group_options(g)]
                raise _located(f"{o.input_line}: glob() picks options of a config group, and '{key}' is not a config "
                               f"group (groups: {', '.join(groups)})", key)
            if not values:
                raise _located(f"{o.input_line}: glob matches no option of config group '{key}' (options: "
                               f"{', '.join(loader.get_group_options(key))})", key)
        elif not values:
            raise _located(f"{o.input_line}: the sweep has no values (so the run would have no points)", key)
    try:
        return BasicSweeper.split_arguments(parsed, None)[0]
    except HydraException as e:
        raise ConfigError(f"invalid sweep: {e}", key="overrides") from e


def _initialize() -> None:
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if not GlobalHydra.instance().is_initialized():
        _register()
        initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3", job_name="launcher")


def _plain(cfg) -> dict:
    """Resolve every interpolation (failing with the key) into plain, JSON-able containers."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    except OmegaConfBaseException as e:
        raise _located(_omegaconf_message(e), getattr(e, "full_key", None) or _first_unresolvable(cfg)) from e


def _compose_raw(overrides: Sequence[str], hydra_node: bool = False):
    """hydra.compose of the root config; ConfigError names the key."""
    from hydra import compose as hydra_compose

    _initialize()
    try:
        return hydra_compose(config_name="config", overrides=list(overrides), return_hydra_config=hydra_node)
    except Exception as e:  # noqa: BLE001 - hydra's MissingConfigException, ConfigCompositionException, OmegaConf's
        raise _composition_error(e) from e


def compose(overrides: Sequence[str]) -> dict:
    """Compose one point: type-checked by the schema, resolved, as plain dicts; ConfigError names the key."""
    return compose_each([list(overrides)])[0]


def compose_points(overrides: Sequence[str], multirun: bool) -> tuple[List[List[str]], List[dict]]:
    """The sweep points (`sweep_points`) and one resolved config per point (`compose_each`)."""
    points = sweep_points(overrides, multirun)
    return points, compose_each(points)


def compose_each(points: Sequence[Sequence[str]]) -> List[dict]:
    """One resolved config per point, each equal to Hydra's own composition of that point alone
    (hydra.compose with the point's override list, as a multirun job gets it).

    Why the shortcut is exact: Hydra composes a point in two steps (ConfigLoaderImpl.
    _load_configuration_impl): it merges the defaults list, which only the config-group overrides
    change, into a config; then it applies the other overrides ("config overrides", Hydra's own split
    in defaults_list.Overrides) to that config, in the order given, with ConfigLoaderImpl.
    _apply_overrides_to_config, and hydra.compose deletes the `hydra` node. So the first step runs once
    per distinct set of group overrides, and each point runs the second step, with the same Hydra
    function, on its own copy of that result (copied on write: `_copy_on_write`), so no point sees
    another's values. Points that set `hydra.*` keys (which can change the search path, hence what a
    group is) are composed in full. 200 points take a few seconds, nearly all of it resolving each
    point (OmegaConf.to_container).

    `+key=`/`++key=` overrides are then checked against the typed schema (Hydra's force-add opens the
    node they write to, so a typo would otherwise be stored silently): see `_check_added_keys`.
    Raises ConfigError naming the stage and key."""
    from collections import Counter

    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.errors import OverrideParseException

    loader = _config_loader()
    parser = _parser()
    parsed_cache: dict = {}

    def parse(text: str):
        if text not in parsed_cache:
            try:
                parsed_cache[text] = parser.parse_override(text)
            except OverrideParseException as e:
                raise OverrideError(f"invalid override: {e}", key="overrides") from e
        return parsed_cache[text]

    @functools.lru_cache(maxsize=None)
    def group_exists(key: str) -> bool:
        return loader.repository.group_exists(key)

    def is_group(o) -> bool:  # Hydra's rule (defaults_list.Overrides): a group key whose value is no mapping
        return group_exists(o.key_or_group) and not isinstance(o.value(), dict)

    jobs = []
    for point in points:
        parsed = [parse(t) for t in point]
        config_overrides = [o for o in parsed if not is_group(o)]
        if any(o.is_hydra_override() for o in parsed):
            jobs.append((tuple(point), [], config_overrides))
        else:
            jobs.append((tuple(t for t, o in zip(point, parsed) if is_group(o)), config_overrides, config_overrides))
    uses = Counter(base for base, _, _ in jobs)
    bases: dict = {}
    configs = []
    with _shared_interpolation_parses():
        for base, config_overrides, checked in jobs:
            if base not in bases:
                bases[base] = _compose_raw(base, hydra_node=True)
            uses[base] -= 1
            with _copy_on_write(bases[base], config_overrides, last_use=uses[base] == 0) as cfg:
                for o in config_overrides:
                    try:
                        ConfigLoaderImpl._apply_overrides_to_config([o], cfg)
                    except Exception as e:  # noqa: BLE001 - ConfigCompositionException, or OmegaConf's own
                        raise _composition_error(e, o) from e
                # as hydra.compose(return_hydra_config=False) does (`with open_dict(cfg): del cfg["hydra"]`),
                # from the root's own key map: open_dict would drop every node's cached flags, twice
                cfg.__dict__["_content"].pop("hydra", None)
                for o in checked:
                    if o.is_add() or o.is_force_add():
                        _check_added_keys(cfg, o.key_or_group)
                configs.append(_plain(cfg))
            if uses[base] == 0:
                del bases[base]
    return configs


@contextlib.contextmanager
def _copy_on_write(base, overrides, last_use: bool):
    """Yield a config that `overrides` may change while `base` stays as it is, copying only what they
    can change: Hydra applies an override with OmegaConf.update (or a `del`), which walks the key's path
    and changes only the container where the walk stops (a key added, rebound or deleted there) and the
    subtree of that key. So each such container gets a fresh (shallow) key map, and the child at the
    key a deep copy; the original key maps come back afterwards. The root always gets a fresh key map
    (the `hydra` node is deleted from it). A path through a list, an interpolation or a None/missing
    container could lead the walk elsewhere: then the whole config is deep-copied (or, for its last
    use, taken as it is)."""
    import copy

    from omegaconf import DictConfig, ListConfig

    def unusual(node) -> bool:
        return node._is_none() or node._is_missing() or node._is_interpolation()

    anchors = [((), None)]
    for o in overrides:
        parts, node, path = o.key_or_group.split("."), base, ()
        for i, part in enumerate(parts):
            if not isinstance(node, DictConfig) or unusual(node):
                anchors = None
                break
            child = node.__dict__["_content"].get(part)
            if isinstance(child, ListConfig) or isinstance(child, DictConfig) and unusual(child):
                anchors = None  # a list, or an interpolated or None container
                break
            if child is None or i == len(parts) - 1 or not isinstance(child, DictConfig):
                anchors.append((path, None if o.is_delete() or child is None else part))
                break
            node, path = child, path + (part,)
        if anchors is None:
            break
    if anchors is None:
        yield base if last_use else copy.deepcopy(base)
        return

    swapped, deep = [], []
    try:
        for path, key in sorted(anchors, key=lambda a: len(a[0])):
            if any(path[:len(d)] == d for d in deep):
                continue  # inside a subtree that is already a copy
            node = base
            for part in path:
                node = node.__dict__["_content"][part]
            content = node.__dict__["_content"]
            if not any(n is node for n, _ in swapped):
                swapped.append((node, content))
                content = node.__dict__["_content"] = dict(content)
            if key is not None and key in content:
                content[key] = copy.deepcopy(content[key])
                deep.append(path + (key,))
        yield base
    finally:
        for node, content in reversed(swapped):
            node.__dict__["_content"] = content


def _schema_type(node):
    """The dataclass of a typed (structured) node, or None for free-form maps (Dict[str, Any]: env,
    params, vars, data, trl, nanotron, after...) and for lists and leaves."""
    import dataclasses

    from omegaconf import DictConfig, OmegaConf

    if not isinstance(node, DictConfig) or node._is_none() or node._is_missing() or node._is_interpolation():
        return None
    t = OmegaConf.get_type(node)
    return t if isinstance(t, type) and dataclasses.is_dataclass(t) else None


def _check_added_keys(cfg, key: str) -> None:
    """A `+key=`/`++key=` override may add keys only where the schema allows new ones (free-form maps):
    under a typed node every key on its path, and every key of a mapping it set, must be a field of
    that node's dataclass. Raises ConfigError with the schema's message and the closest field."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    from launcher.schema import unknown_key_message

    parts = key.split(".")
    node = cfg
    for i, part in enumerate(parts):
        t = _schema_type(node)
        if t is not None and part not in {f for f in t.__dataclass_fields__}:
            raise _unknown_key(unknown_key_message(part, t), ".".join(parts[:i + 1]))
        # follow the path as OmegaConf.update walked it (through interpolations to their target)
        node = OmegaConf.select(cfg, ".".join(parts[:i + 1]), throw_on_missing=False,
                                throw_on_resolution_failure=False)
        if not isinstance(node, (DictConfig, ListConfig)):
            return
    _check_subtree(node, key)


def _check_subtree(node, path: str) -> None:
    from omegaconf import DictConfig, ListConfig

    from launcher.schema import unknown_key_message

    if isinstance(node, DictConfig):
        if node._is_none() or node._is_missing() or node._is_interpolation():
            return
        t = _schema_type(node)
        for k in node.keys():
            if t is not None and k not in t.__dataclass_fields__:
                raise _unknown_key(unknown_key_message(k, t), f"{path}.{k}")
            _check_subtree(node._get_node(k), f"{path}.{k}")
    elif isinstance(node, ListConfig) and not (node._is_none() or node._is_missing() or node._is_interpolation()):
        for i in range(len(node)):
            _check_subtree(node._get_node(i), f"{path}.{i}")


@contextlib.contextmanager
def _shared_interpolation_parses():
    """OmegaConf parses an interpolated string with its ANTLR grammar each time it resolves it
    (~5 ms for a multi-line command). Sweep points resolve the same strings; the parse tree depends on
    the string alone, so they can share it."""
    import omegaconf.base

    original = omegaconf.base.parse
    omegaconf.base.parse = functools.lru_cache(maxsize=None)(original)
    try:
        yield
    finally:
        omegaconf.base.parse = original


_UNKNOWN_KEY = re.compile(r"Key '.*' (not in '|is not in struct)")


def _composition_error(e: Exception, override=None) -> ConfigError:
    """A Hydra or OmegaConf composition error as a ConfigError naming the stage and key. A key that a
    typed node does not have gets the schema's message and the closest field, whether it came from a
    YAML file or an override: Hydra's own advice there ("To append to your config use +...") is wrong,
    since the schema refuses `+` keys as well (`_check_added_keys`)."""
    import dataclasses

    from omegaconf.errors import OmegaConfBaseException, ValidationError

    from launcher.schema import unknown_key_message

    chain, x = [], e
    while x is not None and x not in chain:
        chain.append(x)
        x = x.__cause__ or x.__context__
    oc = next((x for x in chain if isinstance(x, OmegaConfBaseException)), None)
    key = (getattr(oc, "full_key", None) or None) or (override.key_or_group if override is not None else None)
    where = re.match(r"In '[^']+'", str(e))  # Hydra names the config file: "In 'pipeline/smoke': ..."
    prefix = f"{where.group(0)}: " if where else ""
    typed = oc is not None and isinstance(oc.object_type, type) and dataclasses.is_dataclass(oc.object_type)
    if typed and oc.key is not None and _UNKNOWN_KEY.match(str(oc)):
        return _unknown_key(prefix + unknown_key_message(oc.key, oc.object_type), key)
    typed_entry = re.search(r"dict is not a subclass of (\w+)", str(oc)) if isinstance(oc, ValidationError) else None
    if override is not None and (override.is_add() or override.is_force_add()) and typed_entry:
        parts = override.key_or_group.split(".")
        entry = str(getattr(oc, "key", None) or parts[-1])
        i = len(parts) - 1 - parts[::-1].index(entry) if entry in parts else len(parts) - 1
        value = override.get_value_element_as_str()
        for part in reversed(parts[i + 1:]):
            value = f"{{{part}: {value}}}"
        return _located(
            f"{override.input_line}: an entry of a typed map cannot be added by its own key (OmegaConf cannot "
            f"assign a mapping to one entry of a Dict[str, {typed_entry.group(1)}], and Hydra fails the same way); "
            f"merge it into the map instead: '{override.get_key_element()[:-len(override.key_or_group)]}"
            f"{'.'.join(parts[:i])}={{{parts[i]}: {value}}}'", ".".join(parts[:i + 1]))
    if override is not None and override.is_delete() and typed and "does not support deletion" in str(oc):
        return _located(f"{override.input_line}: `~` cannot delete a field of the schema ('{oc.object_type.__name__}'):"
                        f" set it instead (to null where the field is optional)", override.key_or_group)
    if isinstance(e, OmegaConfBaseException):
        return _located(_omegaconf_message(e), key)
    return _located(_hydra_message(e), key)


# Stage names may hold "-" (plan.NAME); a "." in one cannot be told from a nested key here.
_STAGE_KEY = re.compile(r"pipeline\.stages\.([\w-]+)((?:\.[\w-]+)*)")


def _unknown_key(message: str, full_key: str | None) -> ConfigError:
    # A key unknown at the root belongs to no section: like any other malformed override it is
    # reported under `overrides` (the corpus' convention, tests/bad_configs/unknown_root_key.yaml).
    return _located(message, full_key if full_key and "." in full_key else None)


def _located(message: str, full_key: str | None) -> ConfigError:
    """Name the stage and the key, also when only the message carries them."""
    m = _STAGE_KEY.search(full_key or "") or _STAGE_KEY.search(message)
    if m:
        return ConfigError(message, stage=m.group(1), key=m.group(0))
    return ConfigError(message, key=full_key or "overrides")


def _first_unresolvable(node, prefix: str = "") -> str | None:
    """OmegaConf.resolve does not say which key failed; find it by resolving leaf by leaf."""
    from omegaconf import DictConfig, ListConfig
    from omegaconf.errors import OmegaConfBaseException

    if node is None:
        return None
    keys = range(len(node)) if isinstance(node, ListConfig) else list(node.keys())
    for k in keys:
        path = f"{prefix}.{k}" if prefix else str(k)
        try:
            value = node[k]
        except OmegaConfBaseException:
            return path
        if isinstance(value, (DictConfig, ListConfig)):
            found = _first_unresolvable(value, path)
            if found:
                return found
    return None


def _omegaconf_message(e: Exception) -> str:
    # OmegaConf appends a multi-line "full_key/object_type" trailer; keep the first line.
    return str(e).splitlines()[0]


def _hydra_message(e: Exception) -> str:
    msg = str(e).split("\nConfig search path:")[0].strip()
    cause = e.__cause__
    if cause is not None and str(cause) and str(cause) not in msg:
        msg = f"{msg}: {str(cause).splitlines()[0]}"
    if "cluster" in msg and "Could not" in msg:
        msg += f" (profiles in {PROFILES_DIR}: {', '.join(available_profiles())})"
    return msg
