"""The resolved config of every sweep point of a run, in one file: `<run>/config/points.json` holds the
first point's config whole and, for each point, only what differs from it.

Why one file: the points of a sweep differ in a few values (a seed, a learning rate), so writing each
point's whole config (~30 KB for the demo pipeline) costs N files, N fsyncs and ~300 MB at 10,000 points;
the difference list is a few bytes a point, and the file is written (and fsync'ed) once.

Format (`FORMAT` 1):
    {"format": 1, "base": <point 0's config>, "diffs": [<ops of point 0> (empty), <ops of point 1>, ...]}
an op is `[path, value]` (set the key at `path`, a list of mapping keys, to `value`) or `[path]` (delete
it). Lists are values (a changed list is set whole). Runs written before this file existed keep one
`config/point-<i>.json` per point: `read` and `read_all` read either."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Sequence

FORMAT = 1
FILE = "points.json"


def diff(base: Dict[str, Any], other: Dict[str, Any], path: tuple = ()) -> List[list]:
    """The ops that turn `base` into `other` (both plain JSON-able mappings). Subtrees the two share are
    skipped by an identity check, so the cost follows what differs; values are compared as JSON tells
    them apart (1, 1.0 and True differ, as they do in the file)."""
    ops: List[list] = []
    if base is other:
        return ops
    for k, v in other.items():
        if k not in base:
            ops.append([list(path + (k,)), v])
        elif isinstance(v, dict) and isinstance(base[k], dict):
            ops += diff(base[k], v, path + (k,))
        elif not _same(v, base[k]):
            ops.append([list(path + (k,)), v])
    ops += [[list(path + (k,))] for k in base if k not in other]
    return ops


def _same(a: Any, b: Any) -> bool:
    if a is b:
        return True
    if isinstance(a, list) and isinstance(b, list):  # == would equate [1] and [True]: JSON's text does not
        return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    return type(a) is type(b) and a == b


def apply(base: Dict[str, Any], ops: Sequence[list]) -> Dict[str, Any]:
    """`base` with `ops` applied, as a new mapping; `base` is not changed. Mappings on an op's path are
    copied; the rest is shared with `base`, so treat the result as read-only or copy it (`copy`)."""
    out = dict(base)
    copied = {(): out}
    for op in ops:
        path = tuple(op[0])
        node = out
        for i, k in enumerate(path[:-1]):
            sub = path[:i + 1]
            if sub not in copied:
                node[k] = copied[sub] = dict(node[k])
            node = copied[sub]
        if len(op) == 2:
            node[path[-1]] = op[1]
        else:
            node.pop(path[-1], None)
    return out


def copy(obj: Any) -> Any:
    """A deep copy of plain JSON data (mappings, lists, scalars): ~10x faster than copy.deepcopy."""
    if isinstance(obj, dict):
        return {k: copy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [copy(v) for v in obj]
    return obj


_last: list = [(), None]  # the configs last encoded (kept, so no other object takes their ids) and their encoding


def encode(configs: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """The file's content for these configs (one per point, in point order; at least one). The same
    configs again (the same objects: configs are read-only once composed) give the same encoding
    without diffing them again: the login node's compose cache and the run's points.json encode one
    sweep (~0.3 s at 10,000 points)."""
    done, encoded = _last
    if len(done) == len(configs) and all(a is b for a, b in zip(done, configs)):
        return encoded
    base = configs[0]
    encoded = {"format": FORMAT, "base": base, "diffs": [diff(base, c) for c in configs]}
    _last[:] = [tuple(configs), encoded]
    return encoded


def known(configs: Sequence[Dict[str, Any]], encoded: Dict[str, Any]) -> None:
    """Say that `encoded` is the encoding of `configs` (decoded from it), so `encode` returns it."""
    _last[:] = [tuple(configs), encoded]


def decode(data: Dict[str, Any], shared: bool = False) -> List[Dict[str, Any]]:
    """The configs back, each its own deep copy (callers may change them), or with `shared` each sharing
    with the base what its ops do not change (`apply`; read-only, as composed configs are: the
    planner's checks and keys then see one object where the points agree, as after composing). Raises
    ValueError for a format this code does not know."""
    if data.get("format") != FORMAT:
        raise ValueError(f"point configs of format {data.get('format')!r}; this version reads format {FORMAT}")
    if shared:
        return [apply(data["base"], ops) for ops in data["diffs"]]
    return [copy(apply(data["base"], ops)) for ops in data["diffs"]]


def write(run_dir: Path, configs: Sequence[Dict[str, Any]]) -> Path:
    """Write `<run_dir>/config/points.json` atomically (one fsync); returns its path."""
    from jobs import layout

    path = Path(run_dir) / "config" / FILE
    layout.atomic_write_text(path, json.dumps(encode(configs), sort_keys=True) + "\n")
    return path


def read_all(run_dir: Path) -> List[Dict[str, Any]]:
    """Every point's config of a run (either layout); [] when the run recorded none."""
    folder = Path(run_dir) / "config"
    if (folder / FILE).is_file():
        return decode(json.loads((folder / FILE).read_text()))
    old = sorted(folder.glob("point-*.json"), key=lambda p: int(p.stem.split("-", 1)[1]))
    return [json.loads(p.read_text()) for p in old]


def read(run_dir: Path, point: int) -> Dict[str, Any]:
    """One point's config ({} when the run has none for it)."""
    folder = Path(run_dir) / "config"
    if (folder / FILE).is_file():
        data = json.loads((folder / FILE).read_text())
        if data.get("format") != FORMAT:
            raise ValueError(f"{folder / FILE}: format {data.get('format')!r}; this version reads format {FORMAT}")
        return copy(apply(data["base"], data["diffs"][point])) if 0 <= point < len(data["diffs"]) else {}
    old = folder / f"point-{point}.json"
    return json.loads(old.read_text()) if old.is_file() else {}
