"""A sweep point's resolved config from a neighbour's, resolving only what its overrides can change.

Resolving a whole composed config (OmegaConf.to_container(resolve=True)) is most of the time a sweep
takes to compose (~1,000 nodes a point for the demo pipeline, ~10 ms). Points of one sweep differ in
the values of a few keys, so a point's resolved config is its neighbour's (the reference: the first
point composed from the same config groups) with, resolved again from the point's own config:
  - every key that the point's overrides set to another value than the reference's (the two
    lists name the same keys in the same order: a sweep's points do), and
  - every interpolation whose value can depend on one of those keys: it names such a key, a key
    above or below one, or another interpolation that does (to a fixed point); an interpolation that
    cannot be followed by its text (a relative `${.x}`, a nested one that may compute a key, Hydra's
    `${hydra:...}` node, `${now:...}`) is always resolved again. An interpolation inside a list resolves the whole list again.
Everything else is shared with the reference's resolved config (the same objects: treat the configs
as read-only; jobs/point_configs.py writes them as the reference plus differences).

Only plain `key=value` overrides of keys that exist, reached through mappings, are taken this way
(`simple_keys`); `+`/`++`/`~` overrides, `hydra.*` overrides and a config whose `hydra.job.env_set` sets
variables are resolved in full by the caller (launcher/config/compose.py compose_each), which also keeps
the equality with Hydra's own composition that tests/unit/test_sweeps.py checks point by point."""
from __future__ import annotations

import re
from enum import Enum
from typing import Any, Dict, FrozenSet, Iterable, List, Optional, Sequence, Tuple

Path = Tuple[Any, ...]
_TOKEN = re.compile(r"[A-Za-z_][\w\-]*(?:\.[\w\-]+)*")
_ALWAYS = ("hydra:", "now:")  # resolvers whose value is not a function of the config's keys


def simple_keys(cfg, overrides: Sequence[Any]) -> Optional[FrozenSet[str]]:
    """The dotted keys that `overrides` (Hydra Override objects) set, when each is a plain `key=value`
    of a key that exists in `cfg` and is reached through mappings only; None otherwise."""
    keys = set()
    for o in overrides:
        if o.is_add() or o.is_force_add() or o.is_delete() or o.is_hydra_override() or o.key_or_group == "hydra":
            return None
        if node_at(cfg, o.key_or_group.split(".")) is None:
            return None
        keys.add(o.key_or_group)
    return frozenset(keys)


def interpolations(cfg) -> List[Tuple[Path, str]]:
    """(the path resolved again for it, its text) of every interpolation in `cfg` outside `hydra`: the
    node's own path, or the outermost list's path for one inside a list."""
    from omegaconf import DictConfig, ListConfig

    found: List[Tuple[Path, str]] = []

    def walk(node, path: Path, list_path: Optional[Path]) -> None:
        keys = range(len(node)) if isinstance(node, ListConfig) else list(node.__dict__["_content"])
        for k in keys:
            if not path and k == "hydra":
                continue
            child = node._get_node(k)
            here = path + (k,)
            if child._is_interpolation():
                found.append((list_path or here, str(child._value())))
            elif isinstance(child, (DictConfig, ListConfig)) and not (child._is_none() or child._is_missing()):
                walk(child, here, list_path or (here if isinstance(child, ListConfig) else None))

    walk(cfg, (), None)
    return found


def _spans(text: str) -> List[str]:
    """The text inside every `${...}` of an interpolation (nested ones included)."""
    out, starts = [], []
    i = 0
    while i < len(text):
        if text.startswith("${", i):
            starts.append(i + 2)
            i += 2
            continue
        if text[i] == "}" and starts:
            out.append(text[starts.pop():i])
        i += 1
    return out


def dependent(interps: Sequence[Tuple[Path, str]], keys: Iterable[str]) -> List[Path]:
    """The paths of `interps` to resolve again when `keys` (dotted) changed (module docstring)."""
    dirty = set(keys)
    pending = []
    for path, text in interps:
        spans = _spans(text)
        # a nested interpolation in a key or a first argument may compute a key (`${${a.which}}`,
        # `${oc.select:${a.which},0}`): the key it selects is a value, not in the text (a.which=seed:
        # `x${${a.which}}` depends on seed): always. One in a later argument (a default) is followed.
        always = any(s.lstrip().startswith(".") or "${" in s.split(",")[0] or any(a in s for a in _ALWAYS)
                     for s in spans)
        tokens = {t for s in spans for t in _TOKEN.findall(s)}
        pending.append((path, ".".join(map(str, path)), tokens, always))
    out: List[Path] = []
    changed = True
    while changed:
        changed, rest = False, []
        for item in pending:
            path, dotted, tokens, always = item
            if always or any(related_to_any(t, dirty) for t in tokens):
                out.append(path)
                dirty.add(dotted)
                changed = True
            else:
                rest.append(item)
        pending = rest
    return out


def _related(a: str, b: str) -> bool:
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def related_to_any(key: str, keys: Iterable[str]) -> bool:
    """`key` (dotted) is one of `keys`, or above or below one of them."""
    return any(_related(key, k) for k in keys)


def point_plain(reference: Dict[str, Any], paths: Iterable[Path], resolve) -> Dict[str, Any]:
    """`reference` (a resolved config) with the value at each of `paths` replaced by `resolve(path)` (the
    point's own resolved value there; a path inside another one is skipped). Mappings on a changed
    path are copied; the rest is shared with `reference` (jobs/point_configs.py apply)."""
    from jobs import point_configs

    done: List[Path] = []
    for path in sorted(set(paths), key=len):
        if not any(path[:len(d)] == d for d in done):  # inside a subtree already resolved again
            done.append(path)
    return point_configs.apply(reference, [[list(path), resolve(path)] for path in done])


def resolved(cfg, path: Path) -> Any:
    """The plain value at `path` of a composed config, resolved as OmegaConf.to_container(resolve=True,
    enum_to_str=True) would give it. Raises OmegaConf's errors."""
    from omegaconf import DictConfig, ListConfig, OmegaConf, ValueNode

    parent = cfg
    for part in path[:-1]:
        # a plain container is its own value: taken from the key map (what cfg[part] gives, without the
        # resolution machinery: ~4 lookups a path, 10,000s a sweep); anything else as OmegaConf reads it
        node = parent._get_node(part)
        parent = node if plain_container(node) else parent[part]
    child = parent._get_node(path[-1])
    if child is not None and child._is_missing() and not child._is_interpolation():
        return "???"  # to_container keeps a missing value as its marker
    if isinstance(child, ValueNode) and not child._is_interpolation():
        value = child._value()  # what parent[key] returns for a value that is no interpolation
        return value.name if isinstance(value, Enum) else value
    node = parent[path[-1]]
    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True, enum_to_str=True)
    return node.name if isinstance(node, Enum) else node


_SIMPLE_KEY = re.compile(r"[A-Za-z_][\w\-]*(?:\.[A-Za-z_][\w\-]*)*")


class TextTemplate:
    """A string interpolation made of text and absolute node references only (`cmd ${a.b} --x ${c}`),
    resolved without OmegaConf's grammar visitor: OmegaConf's value for such a string is its text with
    each `${key}` replaced by str() of the node the key selects (omegaconf/grammar_visitor.py
    GrammarVisitor._unescape), which is what `render` joins. Only texts without a backslash (no escapes
    to undo), without resolvers, relative or nested interpolations, and not a lone `${key}` (whose value
    keeps its type) are templates; `render` gives None (resolve it with OmegaConf) when the node at the
    path is no longer this text or a referenced node is an interpolation, missing or a container."""

    def __init__(self, path: Path, text: str, pieces: List[str], keys: List[List[str]], node_type: type):
        self.path, self.text, self.pieces, self.keys, self.node_type = path, text, pieces, keys, node_type

    @classmethod
    def of(cls, cfg, path: Path) -> Optional["TextTemplate"]:
        """The template of the interpolation at `path` of `cfg`, or None when it is not one."""
        from omegaconf.nodes import AnyNode, StringNode

        node = node_at(cfg, path)
        if node is None or type(node) not in (AnyNode, StringNode) or not node._is_interpolation():
            return None
        text = str(node._value())
        spans = _spans(text)
        if "\\" in text or not spans or text.count("${") != len(spans) or text == "${" + spans[0] + "}" \
                or not all(_SIMPLE_KEY.fullmatch(s) for s in spans):
            return None
        pieces, rest = [], text
        for s in spans:
            before, _, rest = rest.partition("${" + s + "}")
            pieces.append(before)
        return cls(path, text, pieces + [rest], [s.split(".") for s in spans], type(node))

    def render(self, cfg) -> Optional[str]:
        """The resolved string in `cfg` (a config of the same sweep), or None (module docstring)."""
        node = node_at(cfg, self.path)
        if node is None or type(node) is not self.node_type or not node._is_interpolation() \
                or node._value() != self.text:
            return None
        out = [self.pieces[0]]
        for key, piece in zip(self.keys, self.pieces[1:]):
            ref = node_at(cfg, key)
            if ref is None or ref._is_interpolation() or ref._is_missing() or not _is_value(ref):
                return None
            out += [str(ref), piece]
        return "".join(out)


def _is_value(node) -> bool:
    from omegaconf import ValueNode

    return isinstance(node, ValueNode)


def set_value_node(parent, key: str, value: Any) -> bool:
    """Set a plain value (int, float, bool, str that is no interpolation or ???) on the value node that
    already holds `key` in the DictConfig `parent`, as `setattr(parent, key, value)` does it, without its
    checks that cannot fail there; False (nothing done) when that is not the case. OmegaConf's path
    (DictConfig.__setattr__ -> BaseContainer._set_item_impl): _validate_set returns at once for a target
    that is no DictConfig, and a target with a ref type, or an AnyNode given a primitive, gets
    `target._set_value(value)`, which validates and converts the value for its type (a 10,000-point
    sweep's setattr calls took ~0.3 s of checks)."""
    from omegaconf import AnyNode, ValueNode

    if type(value) not in (int, float, bool, str) or (type(value) is str and ("${" in value or value == "???")):
        return False
    target = node_at(parent, [key])
    if not isinstance(target, ValueNode) or not (target._has_ref_type() or isinstance(target, AnyNode)) \
            or parent._get_flag("readonly"):
        return False
    target._set_value(value)
    return True


def node_at(cfg, path) -> Any:
    """The node at `path` reached through plain mappings (no interpolation, None or missing container on
    the way), else None."""
    node = cfg
    for part in path:
        content = node.__dict__.get("_content")
        if type(content) is not dict:  # noqa: E721 - a DictConfig's key map; else a value, None, ??? or ${...}
            return None
        node = content.get(part)
        if node is None:
            return None
    return node


def plain_container(node) -> bool:
    """A DictConfig or ListConfig holding its keys or items: not None, missing (???) or an interpolation.
    OmegaConf keeps those three as the container's content in place of the dict or list (what its
    _is_none/_is_missing/_is_interpolation look at, each with an import inside: 10,000s of calls)."""
    from omegaconf import DictConfig, ListConfig

    content = node.__dict__.get("_content") if isinstance(node, (DictConfig, ListConfig)) else None
    return type(content) in (dict, list)
