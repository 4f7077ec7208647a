"""`launcher plan --cfg job|all [--resolve] [--package KEY]` (the composed config, as Hydra's --cfg prints
it) and `launcher configs [GROUP]` (config groups and their options, and where each comes from)."""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from launcher.errors import ConfigError, UsageError


def show(overrides: Sequence[str], multirun: bool, cfg: str, resolve: bool = False,
         package: Optional[str] = None) -> str:
    """The YAML of each sweep point's composed config (Hydra's composition, before the launcher's
    checks: like Hydra's --cfg it shows a config that would not plan): `job` without the `hydra`
    node, `all` with it. With several points, one YAML document each, headed by its overrides."""
    from launcher.config.compose import _compose_raw, sweep_points

    points = sweep_points(overrides, multirun)
    docs = []
    for i, point in enumerate(points):
        text = _render(_compose_raw(point, hydra_node=cfg == "all"), resolve, package)
        docs.append((f"# point {i}: {' '.join(point)}\n" if len(points) > 1 else "") + text)
    return "---\n".join(docs)


def _render(cfg, resolve: bool, package: Optional[str]) -> str:
    from omegaconf import Container, OmegaConf

    missing = object()
    node = OmegaConf.select(cfg, package, default=missing, throw_on_resolution_failure=False) if package else cfg
    if node is missing:
        raise _no_such_key(cfg, package)
    if resolve:
        node = _resolved(cfg, package, node)
    elif isinstance(node, Container):
        node = OmegaConf.to_container(node, resolve=False, enum_to_str=True)
    if not isinstance(node, (dict, list)):
        return f"{node}\n"
    return (f"# @package {package}\n" if package else "") + OmegaConf.to_yaml(OmegaConf.create(node))


def _resolved(cfg, package: Optional[str], node):
    """`node` (the config at `package`, or the whole) with its interpolations resolved, as plain values.
    An interpolation of the job's config that fails is an error naming the key (as `plan` reports it);
    one of the `hydra` node that needs a running job (`${hydra.job.num}`) stays as written."""
    from omegaconf import Container, OmegaConf

    from launcher.config.compose import _located, _omegaconf_message

    def walk(value, path: str):
        if isinstance(value, dict):
            return {k: walk(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, f"{path}.{i}") for i, v in enumerate(value)]
        if not (isinstance(value, str) and "${" in value):
            return value
        try:
            got = OmegaConf.select(cfg, path, throw_on_resolution_failure=True)
        except Exception as e:  # noqa: BLE001 - OmegaConf's resolution errors, or a resolver's own
            if path == "hydra" or path.startswith("hydra."):
                return value
            raise _located(_omegaconf_message(e), path) from e
        return OmegaConf.to_container(got, resolve=True, enum_to_str=True) if isinstance(got, Container) else got

    if not isinstance(node, Container):
        return walk(node, package or "")
    return walk(OmegaConf.to_container(node, resolve=False, enum_to_str=True), package or "")


def _no_such_key(cfg, key: str) -> ConfigError:
    from omegaconf import DictConfig, OmegaConf

    parent, _, last = key.rpartition(".")
    node = OmegaConf.select(cfg, parent, default=None, throw_on_resolution_failure=False) if parent else cfg
    keys = [str(k) for k in node.keys()] if isinstance(node, DictConfig) else []
    near = difflib.get_close_matches(last, keys, n=1, cutoff=0.6)
    return ConfigError(f"--package: no key '{key}' in the composed config"
                       + (f"; did you mean '{f'{parent}.' if parent else ''}{near[0]}'?" if near else ""), key=key)


# -- config groups ---------------------------------------------------------------------------------------

INTERNAL = {"hydra"}  # Hydra's own groups (hydra/launcher, hydra/sweeper...): not the launcher's to list
INTERNAL_OPTIONS = {"schema"}  # the typed schema a group's options start from (`defaults: [schema]`)


def groups() -> Dict[str, List[Tuple[str, Path, List[Path]]]]:
    """{group: [(option, its file, the files it shadows)]}, from Hydra's search path (your config
    directories, then conf/) and, for `cluster`, the profiles (your cluster_profiles/, then the
    package's)."""
    from hydra.core.object_type import ObjectType

    from launcher.config import compose, configdirs

    loader = compose._config_loader()
    sources = [s for s in loader.repository.get_sources() if s.scheme() == "file"]
    out: Dict[str, List[Tuple[str, Path, List[Path]]]] = {}
    for group in loader.get_group_options("", results_filter=ObjectType.GROUP):
        if group in INTERNAL or group == "cluster":
            continue
        rows = []
        for option in loader.get_group_options(group):
            files = [Path(s.path) / group / f"{option}.yaml" for s in sources if s.is_config(f"{group}/{option}")]
            if option not in INTERNAL_OPTIONS and files:
                rows.append((option, files[0], files[1:]))
        if rows:
            out[group] = rows
    profile_dirs = [d / configdirs.PROFILES for d in configdirs.current()] + [compose.PROFILES_DIR]
    out["cluster"] = [(name, path, [d / path.name for d in profile_dirs if (d / path.name).exists()][1:])
                      for name, path in compose.profile_files().items()]
    return dict(sorted(out.items()))


def listing(group: Optional[str] = None) -> str:
    """Without GROUP: one line per group, its options. With GROUP: one line per option, its file, and
    the files of the same name it shadows."""
    found = groups()
    if group is None:
        width = max(map(len, found))
        return "".join(f"{g:<{width}}  {' '.join(o for o, _, _ in rows)}\n" for g, rows in found.items())
    if group not in found:
        near = difflib.get_close_matches(group, list(found), n=1, cutoff=0.6)
        raise UsageError(f"no config group '{group}'" + (f"; did you mean '{near[0]}'?" if near else "")
                         + f" (groups: {', '.join(found)})")
    width = max(len(o) for o, _, _ in found[group])
    return "".join(f"{o:<{width}}  {path}" + (f"  (shadows {', '.join(map(str, hidden))})" if hidden else "") + "\n"
                   for o, path, hidden in found[group])
