"""Hydra composition: overrides (and multirun sweeps) → one resolved config per sweep point."""
from __future__ import annotations

import contextlib
import functools
import os
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from launcher.config import hydra_facts, hydra_settings, incremental, override_text
from launcher.errors import ConfigError, ConfigErrors, OverrideError

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent
CONF_DIR = Path(os.environ.get("LAUNCHER_CONF_DIR", PROJECT_ROOT / "conf"))
PROFILES_DIR = Path(os.environ.get("LAUNCHER_PROFILES_DIR", PROJECT_ROOT / "cluster_profiles"))


def profile_files() -> Dict[str, Path]:
    """Cluster profile name -> its file: the package's (cluster_profiles/), then each config directory's
    <dir>/cluster_profiles/ (launcher/config/configdirs.py), the first directory's winning."""
    from launcher.config import configdirs

    found = {p.stem: p for p in sorted(PROFILES_DIR.glob("*.yaml"))}
    for d in reversed(configdirs.current()):
        found.update({p.stem: p for p in sorted((d / configdirs.PROFILES).glob("*.yaml"))})
    return dict(sorted(found.items()))


def profile_setting(name: str, key: str) -> Optional[str]:
    """A cluster profile's own top-level value as its file writes it, resolved alone (`${oc.env:...}` is
    all it may use), without composing: for guesses made before composition (launcher/run/ops.py
    `_early_backend`), which the composed profile confirms. None when the profile, the key or a
    resolvable value is missing."""
    import yaml
    from omegaconf import OmegaConf

    path = profile_files().get(name)
    try:
        raw = (yaml.safe_load(path.read_text()) or {}).get(key) if path else None
        return None if raw is None else str(OmegaConf.create({"v": raw}).v)
    except Exception:  # noqa: BLE001 - an unreadable file or a value that needs the rest of the config
        return None


def available_profiles() -> List[str]:
    return list(profile_files())


def _register() -> None:
    """Put the schema and every cluster profile into Hydra's ConfigStore (group `cluster`),
    so `cluster=dev` and `cluster.partition=...` compose like any other group, type-checked."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    from launcher.config.schema import Cluster, Config, Model, Pipeline

    _register_abspath()
    cs = ConfigStore.instance()
    cs.store(name="schema", node=Config)
    cs.store(group="pipeline", name="schema", node=Pipeline)
    cs.store(group="model", name="schema", node=Model)
    cs.repo.pop("cluster", None)  # the profiles of other config directories (composing again in one process)
    for name, path in profile_files().items():
        try:
            profile = OmegaConf.merge(OmegaConf.structured(Cluster), OmegaConf.load(path))
        except Exception as e:  # noqa: BLE001 - report which file is broken, with OmegaConf's words
            raise ConfigError(f"cluster profile {path} is invalid: {e}", key="cluster") from e
        cs.store(group="cluster", name=name, node=profile)


def compose_plain(config: dict) -> dict:
    """One point's config from plain values, without Hydra's composition (for a caller that runs inside
    another Hydra app, whose global Hydra this must not touch: the launcher plugin). `config` holds the
    root keys, with `cluster` the name of a profile (cluster_profiles/<name>.yaml). Typed by the schema
    like `compose`, resolved, as plain dicts; ConfigError names the key."""
    from omegaconf import OmegaConf

    from launcher.config.schema import Cluster, Config

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


class _LazyLoader:
    """Hydra's config loader, initialized on first use: the parsed overrides keep it for glob() sweeps
    only, so a command whose other questions `_facts` answers never starts Hydra."""

    def __getattr__(self, name):
        return getattr(_config_loader(), name)


def _parser():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create(config_loader=_LazyLoader())


_facts = hydra_facts.Facts(None)  # answers kept between commands (`kept_facts`); by default none


@contextlib.contextmanager
def kept_facts(path):
    """Compose with the answers kept in `path` (launcher/config/hydra_facts.py; None: none kept), and
    write the ones added. Yields the answers (`Facts.elsewhere`: the composition read files no
    fingerprint covers)."""
    global _facts
    previous, _facts = _facts, hydra_facts.Facts(path)
    if _plugin_search_path:  # Hydra initialized before, in this process, with a SearchPathPlugin's folders
        _facts.forget()
    try:
        yield _facts
    finally:
        _facts.save()
        _facts = previous


def _group_exists(key: str) -> bool:
    return _facts.group_exists(key, lambda k: _config_loader().repository.group_exists(k))


def _base(lines: Sequence[str]):
    """The config composed from these config-group choices, with its `hydra` node (`_compose_raw`),
    from the kept answers when they have it. The resolvers a composition registers (Hydra's ${now:},
    ${hydra:}, ${python_version:}; the launcher's ${abspath:}) are registered either way."""
    cfg = _facts.base(tuple(lines), lambda: _compose_raw(lines, hydra_node=True))
    _register_resolvers()
    return cfg


def _register_resolvers() -> None:
    from hydra.core.utils import setup_globals
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("abspath"):
        setup_globals()  # what Hydra.create_main_hydra2 registers
        _register_abspath()


def _register_abspath() -> None:
    from omegaconf import OmegaConf

    # ${abspath:data/x}: tasks run elsewhere, so relative paths are fixed against the submitting directory.
    OmegaConf.register_new_resolver("abspath", lambda p: os.path.abspath(os.path.expanduser(str(p))), replace=True)


def sweep_points(overrides: Sequence[str], multirun: bool) -> List[List[str]]:
    return _sweep(overrides, multirun)[0]


def _sweep(overrides: Sequence[str], multirun: bool) -> tuple[List[List[str]], dict]:
    """Expand Hydra sweep syntax into one override list per point, exactly as Hydra's basic sweeper
    (`-m`) does: `a=1,2 b=x,y` (the cartesian product, first key outermost), range(), choice(), glob()
    over a config group's options (with exclude=), sort(), shuffle(), tag(). Values keep Hydra's own
    string form (quotes included), so each point is later parsed as Hydra parses it.

    With -m, `hydra.sweeper.params` (set in a config file, and changed on the command line where
    Hydra allows it) adds its sweeps as the basic sweeper does: `key=value` each, before the command
    line's overrides, so that one of the same key on the command line wins (`_sweep_params`).

    Raises ConfigError (key named) for: a parse error; a sweep without -m (hydra.sweeper.params on the
    command line included); interval() (a continuous range, for optimizing sweepers: the basic sweeper
    cannot enumerate it); glob() on a key that is not a config group or matching no option; a sweep
    with no values; a `hydra.*` setting or `hydra/` group that cannot be used (launcher/config/hydra_settings.py)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.object_type import ObjectType
    from hydra.core.override_parser.types import ValueType
    from hydra.errors import HydraException, OverrideParseException

    try:
        parsed = _parser().parse_overrides(list(overrides))
    except OverrideParseException as e:
        raise OverrideError(f"invalid override: {e}", key="overrides") from e
    errors = hydra_settings.override_problems(parsed)
    if errors:
        raise ConfigErrors(errors)
    sweeps = [o for o in parsed if o.is_sweep_override()]
    if not multirun:
        if sweeps:
            raise OverrideError(f"sweep override(s) {[o.input_line for o in sweeps]} need -m/--multirun; a value "
                                f"with a comma in it (a partition list, mail types) is quoted: \"key='a,b'\"",
                                key="overrides")
        params = [o for o in parsed if _under(o.key_or_group, SWEEP_PARAMS) and o.value() is not None]
        if params:
            raise _params_need_multirun(params[0].key_or_group)
        return [list(overrides)], {}
    params, primed = _sweep_params(parsed)
    parsed = params + parsed  # as the basic sweeper: its params first, the command line's wins for the same key
    for o in (o for o in parsed if o.is_sweep_override()):
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
            if not _group_exists(key):
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
        return BasicSweeper.split_arguments(parsed, None)[0], primed
    except HydraException as e:
        raise ConfigError(f"invalid sweep: {e}", key="overrides") from e


_initialized_with: Optional[List[Path]] = None  # the config directories Hydra was initialized with
_plugin_search_path: List[str] = []  # config search path entries Hydra's SearchPathPlugins added
_OWN_PROVIDERS = ("hydra", "main", "launcher-config-dir", "schema")  # create_config_search_path's and ours


SWEEP_PARAMS = "hydra.sweeper.params"


def _under(key: str, prefix: str) -> bool:
    return key == prefix or key.startswith(prefix + ".")


def _params_need_multirun(key: str) -> OverrideError:
    return OverrideError("hydra.sweeper.params is read by a multirun only (-m/--multirun), as in Hydra: run with "
                         "-m, or drop the config's params with hydra.sweeper.params=null", key=key)


def _changes_search_path(o) -> bool:
    """hydra.searchpath changes what the config groups are: such a point is composed in full."""
    return o.key_or_group == "hydra" or _under(o.key_or_group, "hydra.searchpath")


def _is_group(o) -> bool:
    """Hydra's rule (defaults_list.Overrides): a config group's key, with a value that is no mapping."""
    return _group_exists(o.key_or_group) and not isinstance(o.value(), dict)


def _sweep_params(parsed) -> tuple[list, dict]:
    """The overrides that hydra.sweeper.params makes, parsed: Hydra's BasicSweeper.sweep puts `key=value`
    for each of its params before the command line's overrides, and split_arguments keeps one entry
    per key (the last, at the place of the first). The params are read from the config as a multirun
    composes it before sweeping: with the command line's overrides that are not sweeps (only its config
    group choices and hydra.* overrides can change the `hydra` node, so only those are applied).

    Returns them and {base: config} for compose_each: the config composed from the group choices is the
    base of every point that makes the same choices (`compose_each`), so it is composed once."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.errors import OverrideParseException

    fixed = [o for o in parsed if not o.is_sweep_override()]
    search_path = any(_changes_search_path(o) for o in fixed)
    lines = tuple(f"{o.get_key_element()}={o.get_value_element_as_str()}" for o in fixed
                  if _is_group(o) or _changes_search_path(o))
    later = [o for o in fixed if (o.key_or_group == "hydra" or o.is_hydra_override()) and not _is_group(o)
             and not _changes_search_path(o)]
    base = _base(lines)
    with _copy_on_write(base, later, last_use=False) as cfg:
        for o in later:
            try:
                ConfigLoaderImpl._apply_overrides_to_config([o], cfg)
            except Exception as e:  # noqa: BLE001 - ConfigCompositionException, or OmegaConf's own
                if _under(o.key_or_group, SWEEP_PARAMS) and cfg.hydra.sweeper.params is None:
                    raise ConfigError(f"{o.input_line}: hydra.sweeper.params is null in the config, and Hydra cannot "
                                      f"set keys under it from the command line (it fails with a NoneType error): "
                                      f"write the sweep itself (-m key=a,b), or set hydra.sweeper.params in a config "
                                      f"file", key=SWEEP_PARAMS) from e
                raise _composition_error(e, o) from e
        _check_hydra_node(cfg)
        params = _plain(cfg.hydra.sweeper.params) if cfg.hydra.sweeper.params else {}
    primed = {} if search_path else {lines: base}  # (a point with hydra.searchpath is composed in full)
    parser, out = _parser(), []
    for k, v in params.items():
        try:
            out.append(parser.parse_override(f"{k}={v}"))
        except OverrideParseException as e:
            raise ConfigError(f"{k}: {v}: not an override Hydra can parse: {e}", key=f"{SWEEP_PARAMS}.{k}") from e
    errors = hydra_settings.override_problems(out, sweeps_allowed=True)
    if errors:
        raise ConfigErrors([ConfigError(f"set by {SWEEP_PARAMS}: {e.message}", key=e.key) for e in errors])
    return out, primed


def _reference_hydra_node() -> dict:
    """Hydra's own `hydra` node, composed with no config and no override (unresolved)."""
    return _facts.reference_hydra_node(_compose_hydra_node)


@functools.lru_cache(maxsize=1)
def _compose_hydra_node() -> dict:
    from hydra import compose as hydra_compose
    from omegaconf import OmegaConf

    _initialize()
    return OmegaConf.to_container(hydra_compose(config_name=None, overrides=[], return_hydra_config=True).hydra,
                                  resolve=False)


def _initialize() -> None:
    """Hydra initialized as initialize_config_dir(conf/) does, with the config directories
    (launcher/config/configdirs.py) put into its search path ahead of conf/, as Hydra's own --config-dir is
    put into an app's (there: behind the app's configs; here ahead, so yours shadow the package's).
    Again when the directories changed (resume of a run recorded with others, tests).
    An entry an installed SearchPathPlugin added (`_plugin_search_path`) holds config files no kept
    answer's fingerprint covers: the answers of this process are not kept (hydra_facts.Facts.forget)."""
    global _initialized_with, _plugin_search_path
    from hydra import version
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.config_search_path import SearchPathQuery
    from hydra.core.global_hydra import GlobalHydra

    from launcher.config import configdirs

    dirs = configdirs.current()
    if GlobalHydra.instance().is_initialized():
        if dirs == _initialized_with:
            return
        GlobalHydra.instance().clear()
    _register()
    version.setbase("1.3")
    search_path = create_config_search_path(str(CONF_DIR))
    for d in dirs:  # each before conf/ ("main"), so in the order given
        search_path.prepend(provider="launcher-config-dir", path=f"file://{d}", anchor=SearchPathQuery(provider="main"))
    Hydra.create_main_hydra2(task_name="launcher", config_search_path=search_path)
    _initialized_with = dirs
    _plugin_search_path = [f"{e.provider}: {e.path}" for e in search_path.get_path()
                           if e.provider not in _OWN_PROVIDERS]
    if _plugin_search_path:
        _facts.forget()


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
    points, primed = _sweep(overrides, multirun)
    return points, compose_each(points, multirun=multirun, _bases=primed)


def compose_each(points: Sequence[Sequence[str]], multirun: bool = True, _bases: dict | None = None) -> List[dict]:
    """One resolved config per point, each equal to Hydra's own composition of that point alone
    (hydra.compose with the point's override list, as a multirun job gets it).

    Why the shortcut is exact: Hydra composes a point in two steps (ConfigLoaderImpl.
    _load_configuration_impl): it merges the defaults list, which only the config-group overrides
    change, into a config; then it applies the other overrides ("config overrides", Hydra's own split
    in defaults_list.Overrides) to that config, in the order given, with ConfigLoaderImpl.
    _apply_overrides_to_config, and hydra.compose deletes the `hydra` node. So the first step runs once
    per distinct set of group overrides, and each point runs the second step, with the same Hydra
    function, on its own copy of that result (copied on write: `_copy_on_write`), so no point sees
    another's values. Points that set `hydra.searchpath` (which changes what a group is) are
    composed in full; other `hydra.*` keys are config overrides like any other, as in Hydra.

    `+key=`/`++key=` overrides are then checked against the typed schema (Hydra's force-add opens the
    node they write to, so a typo would otherwise be stored silently): see `_check_added_keys`.

    Points after the first of a config-group set are resolved from it (launcher/config/incremental.py):
    the configs returned share the subtrees that no override can change, so callers read them only.

    Each composed `hydra` node is checked (launcher/config/hydra_settings.py: a setting the launcher would
    drop is refused; hydra.sweeper.params without `multirun` too), and a point's hydra.job.env_set,
    when it sets any variable, is kept in its config as `hydra: {job: {env_set: {...}}}`: every stage's
    tasks get it (plan.build_plan), after the secret checks (launcher/plan/secrets.py).
    Raises ConfigError naming the stage and key."""
    from collections import Counter

    jobs = _split_points(points)
    uses = Counter(base for base, _, _ in jobs)
    bases: dict = {}
    refs: dict = {}  # per base: the first point resolved in full, for the next ones (launcher/config/incremental.py)
    configs = []
    with _shared_interpolation_parses():
        for base, config_overrides, checked in jobs:
            if base not in bases:
                primed = (_bases or {}).pop(base, None)  # composed by sweep_points already
                bases[base] = _base(base) if primed is None else primed
                _check_hydra_node(bases[base])
            uses[base] -= 1
            keys = refs[base].changed_keys(bases[base], config_overrides) if base in refs else None
            if keys is not None and refs[base].patchable(config_overrides):
                configs.append(refs[base].patched(config_overrides, keys))
            else:
                configs.append(_apply_point(bases[base], config_overrides, checked, multirun, uses[base] == 0,
                                            refs, base, keys))
            if uses[base] == 0:
                del bases[base]
    return configs


def _apply_point(base_cfg, config_overrides, checked, multirun: bool, last_use: bool, refs: dict, base, keys):
    """One point's resolved config from its base (a copy-on-write view with its overrides applied by
    Hydra): from the reference's when `keys` (its changed keys) says so, else in full, which makes it
    the base's reference when none is yet (compose_each)."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    with _copy_on_write(base_cfg, config_overrides, last_use=last_use) as cfg:
        for o in config_overrides:
            try:
                ConfigLoaderImpl._apply_overrides_to_config([o], cfg)
            except Exception as e:  # noqa: BLE001 - ConfigCompositionException, or OmegaConf's own
                raise _composition_error(e, o) from e
        # hydra.job.env_set goes into each point's config by _finish_point: those points in full
        shortcut = multirun and not len(cfg.hydra.job.env_set)
        if shortcut and keys is not None:
            return refs[base].point(cfg, keys)
        plain = _finish_point(cfg, checked, multirun)
        if shortcut and base not in refs:
            refs[base] = _Reference(plain, config_overrides, cfg)
        return plain


def _split_points(points: Sequence[Sequence[str]]) -> list:
    """Per point (its config-group overrides: the base it is composed from, the overrides applied to that
    base, the overrides checked after): Hydra's own split (defaults_list.Overrides). Points that set
    hydra.searchpath are their own base. Raises ConfigError for a parse error or a hydra.* setting the
    launcher would drop."""
    from hydra.errors import OverrideParseException

    loader = _LazyLoader()
    parser = _parser()
    parsed_cache: dict = {}

    def parse(text: str):
        if text not in parsed_cache:
            try:
                # parse_overrides, not parse_override: only it turns a syntax error (HydraException) into
                # OverrideParseException, Hydra's words with the text (compose(["seed=${a}}"]) raised it raw)
                parsed_cache[text] = override_text.parse(text, loader) or parser.parse_overrides([text])[0]
            except OverrideParseException as e:
                raise OverrideError(f"invalid override: {e}", key="overrides") from e
        return parsed_cache[text]

    @functools.lru_cache(maxsize=None)
    def group_exists(key: str) -> bool:
        return _group_exists(key)

    def is_group(o) -> bool:  # Hydra's rule (defaults_list.Overrides): a group key whose value is no mapping
        return group_exists(o.key_or_group) and not isinstance(o.value(), dict)

    jobs, hydra_overrides = [], {}
    for point in points:
        parsed = [parse(t) for t in point]
        hydra_overrides.update((o.input_line, o) for o in parsed if o.key_or_group == "hydra" or o.is_hydra_override())
        config_overrides = [o for o in parsed if not is_group(o)]
        if any(_changes_search_path(o) for o in parsed):
            jobs.append((tuple(point), [], config_overrides))
        else:
            jobs.append((tuple(t for t, o in zip(point, parsed) if is_group(o)), config_overrides, config_overrides))
    errors = hydra_settings.override_problems(hydra_overrides.values(), sweeps_allowed=True)
    if errors:
        raise ConfigErrors(errors)
    return jobs


class _Reference:
    """The first point of a base resolved in full, and what the next points must resolve again
    (launcher/config/incremental.py): its overrides' keys and the interpolations of the config."""

    def __init__(self, plain: dict, overrides, cfg):
        import copy
        from itertools import combinations

        self.plain = plain
        self.keys = [o.key_or_group for o in overrides]
        self.lines = [o.input_line for o in overrides]
        self.overrides = list(overrides)
        self.interps = incremental.interpolations(cfg)
        self._paths: dict = {}
        self._templates: dict = {}  # path -> incremental.TextTemplate of the interpolation there, or None
        # The config of the last point patched (`patched`): the reference's, copied once, and the override
        # lines applied to it. Applying only a point's differing overrides to it equals applying all of
        # them to the base when no two overrides write the same key or one above or below another's.
        self._independent = not any(incremental.related_to_any(a, [b]) for a, b in combinations(self.keys, 2))
        self._scratch = copy.deepcopy(cfg) if self._independent else None
        self._applied = list(self.lines)
        self._parents: dict = {}  # dotted key -> its container in the kept config

    def patchable(self, overrides) -> bool:
        """`patched` gives this point exactly: the overrides write unrelated keys, and each one that
        differs from the last point's sets a plain value (a dict or list would be merged into the last
        point's instead of the base's)."""
        from hydra.core.override_parser.types import ValueType

        return self._independent and all(
            o.value_type == ValueType.ELEMENT and not isinstance(o.value(), (dict, list))
            for o, line in zip(overrides, self._applied) if o.input_line != line)

    def patched(self, overrides, changed) -> dict:
        """A point's resolved config without copying the base: its overrides that differ from the last
        point's applied (Hydra's own _apply_overrides_to_config) to the config kept from it, then only the
        changed keys and their dependent interpolations resolved (`point`)."""
        for i, o in enumerate(overrides):
            if o.input_line != self._applied[i]:
                try:
                    self._set(o)
                except Exception as e:  # noqa: BLE001 - ConfigCompositionException, or OmegaConf's own
                    self._independent = False  # the kept config may be half-changed: no later point uses it
                    raise _composition_error(e, o) from e
                self._applied[i] = o.input_line
        return self.point(self._scratch, changed)

    def _set(self, o) -> None:
        """A plain `key=value` (simple_keys: a key reached through mappings) set on the kept config as
        Hydra's _apply_overrides_to_config does it, OmegaConf.update(cfg, key, value, merge=True): a
        setattr on the key's container (found once per key) for a value that is no dict or list. On
        an error Hydra's function runs instead, so the error raised is Hydra's own."""
        from hydra._internal.config_loader_impl import ConfigLoaderImpl

        *path, last = o.key_or_group.split(".")
        parent = self._parents.get(o.key_or_group)
        if parent is None:
            parent = self._parents[o.key_or_group] = incremental.node_at(self._scratch, path)
        try:
            value = o.value()
            if not incremental.set_value_node(parent, last, value):
                setattr(parent, last, value)
        except Exception:  # noqa: BLE001 - whatever OmegaConf raises, Hydra's path raises it in its words
            ConfigLoaderImpl._apply_overrides_to_config([o], self._scratch)
            raise

    def changed_keys(self, base, overrides):
        """The keys a point's overrides set differently from the reference's, when the two lists name the
        same keys in the same order and every difference is a plain `key=value` (incremental.simple_keys)
        that no `+` override of the list writes under or above; else None (resolve it in full)."""
        if [o.key_or_group for o in overrides] != self.keys:
            return None
        differing = [(o, r) for o, r in zip(overrides, self.overrides) if o.input_line != r.input_line]
        keys = incremental.simple_keys(base, [o for o, _ in differing])
        # the reference's override there must be a plain `key=value` too: after its `~key` (or `+key`) the
        # kept config and the reference's resolved one lack the key (or hold one the base has not), so
        # setting it there is no longer what Hydra does to the base (a `~x` point then `x=3`: an error)
        if keys is None or incremental.simple_keys(base, [r for _, r in differing]) is None or any((o.is_add() or o.is_force_add()) and incremental.related_to_any(o.key_or_group, keys)
                               for o in overrides):
            return None
        return keys

    def point(self, cfg, changed) -> dict:
        from omegaconf.errors import OmegaConfBaseException

        if changed not in self._paths:
            self._paths[changed] = ([tuple(k.split(".")) for k in changed]
                                    + incremental.dependent(self.interps, changed))
        cfg.__dict__["_content"].pop("hydra", None)  # as _finish_point: the point's config has no hydra node

        def resolve(path):
            if path not in self._templates:
                self._templates[path] = incremental.TextTemplate.of(cfg, path)
            text = self._templates[path].render(cfg) if self._templates[path] else None
            if text is not None:
                return text
            try:
                return incremental.resolved(cfg, path)
            except OmegaConfBaseException as e:
                # the point alone resolves its whole config in order and names the first key that fails (a
                # command using a bad swept value, before the value's own key): that error, in its words
                _plain(cfg)
                raise _located(_omegaconf_message(e), getattr(e, "full_key", None) or ".".join(map(str, path))) from e

        return incremental.point_plain(self.plain, self._paths[changed], resolve)


def _check_hydra_node(cfg) -> None:
    """Refuse what a composed `hydra` node sets that the launcher would drop (launcher/config/hydra_settings.py)."""
    from omegaconf import OmegaConf

    errors = hydra_settings.node_problems(OmegaConf.to_container(cfg.hydra, resolve=False), _reference_hydra_node())
    if errors:
        raise ConfigErrors(errors)


def _finish_point(cfg, checked, multirun: bool) -> dict:
    """A point's config, its overrides applied: without the `hydra` node (as hydra.compose returns it)
    but for hydra.job.env_set when it sets a variable, checked (`+` keys) and resolved."""
    if not multirun and cfg.hydra.sweeper.params:
        raise _params_need_multirun(SWEEP_PARAMS)
    env_set = _plain(cfg.hydra.job.env_set) if len(cfg.hydra.job.env_set) else None
    # as hydra.compose(return_hydra_config=False) does (`with open_dict(cfg): del cfg["hydra"]`),
    # from the root's own key map: open_dict would drop every node's cached flags, twice
    cfg.__dict__["_content"].pop("hydra", None)
    for o in checked:
        if (o.is_add() or o.is_force_add()) and not o.is_hydra_override():
            _check_added_keys(cfg, o.key_or_group)
    plain = _plain(cfg)
    if env_set:
        plain["hydra"] = {"job": {"env_set": {str(k): str(v) for k, v in env_set.items()}}}
    return plain


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

    from launcher.config.schema import unknown_key_message

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

    from launcher.config.schema import unknown_key_message

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
_MISSING_HYDRA_OPTION = re.compile(r"Could not find '(hydra/\w+)/([^'/]+)'")
_HYDRA_NODE_HINT = ("; Hydra's own settings (hydra.sweeper.params, hydra.job.env_set) are at the root of the "
                    "config: a pipeline config sets them with `# @package _global_` as its first line and its "
                    "pipeline under `pipeline:`")


def _composition_error(e: Exception, override=None) -> ConfigError:
    """A Hydra or OmegaConf composition error as a ConfigError naming the stage and key. A key that a
    typed node does not have gets the schema's message and the closest field, whether it came from a
    YAML file or an override: Hydra's own advice there ("To append to your config use +...") is wrong,
    since the schema refuses `+` keys as well (`_check_added_keys`)."""
    import dataclasses

    from omegaconf.errors import OmegaConfBaseException, ValidationError

    from launcher.config.schema import unknown_key_message

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
        hint = _HYDRA_NODE_HINT if oc.key == "hydra" else ""
        return _unknown_key(prefix + unknown_key_message(oc.key, oc.object_type) + hint, key)
    missing = _MISSING_HYDRA_OPTION.search(str(e))
    if missing and (why := hydra_settings.problem(missing.group(1), missing.group(2))):
        return ConfigError(why, key=missing.group(1))  # e.g. `override /hydra/sweeper: optuna`, not installed
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
    from hydra.errors import MissingConfigException

    msg = str(e).split("\nConfig search path:")[0].strip()
    missing = getattr(e, "missing_cfg_file", None) if isinstance(e, MissingConfigException) else None
    if missing and "/" in missing and "\nAvailable options in" in msg:
        return _no_such_option(msg.split("\nAvailable options in")[0].strip(), missing, e.options or [])
    cause = e.__cause__
    if cause is not None and str(cause) and str(cause) not in msg:
        msg = f"{msg}: {str(cause).splitlines()[0]}"
    return msg


def _no_such_option(msg: str, missing: str, options: Sequence[str]) -> str:
    """Hydra's "Could not find 'pipeline/smok'" and its option list (one per line), as one line with the
    closest option, without internal entries (a group's `schema`), and where they come from."""
    import difflib

    from launcher.config import configdirs

    group, _, name = missing.rpartition("/")
    options = [o for o in options if o != "schema"]
    near = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    where = f"{PROFILES_DIR}/" if group == "cluster" else f"{CONF_DIR / group}/"
    dirs = [f"{d / (configdirs.PROFILES if group == 'cluster' else group)}/" for d in configdirs.current()]
    return (msg + (f"; did you mean '{near[0]}'?" if near else "")
            + f" (options in '{group}': {', '.join(options)}; from {', '.join(dirs + [where])})")
