"""One module per stage kind, login side: the registry.

BUILTIN maps a kind's name to its module (launcher/kinds/<module>.py, whose KIND is the Kind instance,
launcher/kinds/base.py), imported only when the kind is asked for. A package adds a kind without an
edit here: an entry point in the group "launcher.kinds" (importlib.metadata; pyproject.toml
`[project.entry-points."launcher.kinds"] toy = "pkg.mod:ToyKind"`), whose value names a Kind subclass
(or instance) or a module with a KIND. Its node side is any importable module (Kind.runner_module)."""
from __future__ import annotations

import difflib
import functools
import importlib
from importlib.metadata import entry_points
from typing import Dict, List

from launcher.kinds.base import Kind, Problems  # noqa: F401  (what a kind module imports)

GROUP = "launcher.kinds"
# In this order the kinds' pipeline hooks run (minhash expands before the fetch stage is added) and
# their sections appear in the schema's Stage.
BUILTIN: Dict[str, str] = {name: f"launcher.kinds.{name}" for name in (
    "command", "python", "preprocess", "minhash", "pretrain", "torchrun", "convert", "evaluate", "align", "serve",
    "generate", "classifier", "cluster", "quantize", "fetch", "publish", "hydra_app")}


@functools.lru_cache(maxsize=1)
def plugins() -> Dict[str, str]:
    """{name: "pkg.mod[:attr]"} of the kinds installed packages declare (entry point group GROUP)."""
    return {ep.name: ep.value for ep in entry_points(group=GROUP) if ep.name not in BUILTIN}


def names() -> List[str]:
    """Every stage kind a config may name, built-in ones first."""
    return [*BUILTIN, *plugins()]


@functools.lru_cache(maxsize=None)
def get(name: str) -> Kind:
    """The Kind of a name, its module imported now. KeyError (with the known names and the closest one)
    for a kind nobody declares."""
    where = BUILTIN.get(name) or plugins().get(name)
    if where is None:
        raise KeyError(unknown_message(name))
    module, _, attr = where.partition(":")
    obj = getattr(importlib.import_module(module), attr or "KIND")
    kind = obj() if isinstance(obj, type) else obj
    if not isinstance(kind, Kind) or kind.name != name:
        raise TypeError(f"{where} is not the Kind of {name!r} (a launcher.kinds.base.Kind with name={name!r})")
    return kind


def unknown_message(name: str) -> str:
    near = difflib.get_close_matches(str(name), names(), n=1)
    return (f"unknown stage kind {name!r} (kinds: {', '.join(names())})"
            + (f"; did you mean {near[0]!r}?" if near else ""))


def all_kinds() -> List[Kind]:
    """Every Kind, in registry order (imports them all)."""
    return [get(n) for n in names()]
