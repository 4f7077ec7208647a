"""Folder placeholders in stage strings ({input}, {input:<stage>}, {output}, ...: jobs/layout.py
PLACEHOLDER) and walking a stage's config: shared by the kinds' checks. Pure."""
from __future__ import annotations

from typing import Any, Dict, Iterator, List, Tuple

from jobs.layout import PLACEHOLDER

from launcher.errors import ConfigError


def walk(node: Any, key: str) -> Iterator[Tuple[str, Any]]:
    """(config key, value) of every leaf and dict below node."""
    if isinstance(node, dict):
        yield key, node
        for k, v in node.items():
            yield from walk(v, f"{key}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, f"{key}.{i}")
    else:
        yield key, node


def check_placeholders(name: str, st: Dict[str, Any], strings: List[Tuple[str, str]], ancestors: set,
                       errors: List[ConfigError]) -> None:
    """Folder placeholders in (config key, string) pairs name stages this one waits for."""
    parents = list(st["after"])
    for k, v in strings:
        for m in PLACEHOLDER.finditer(v):
            what, ref = m.groups()
            if what == "input" and ref is None and len(parents) != 1:
                errors.append(ConfigError(f"{{input}} needs exactly one stage in `after` (has {len(parents)}); "
                                          f"name one: {{input:<stage>}}", stage=name, key=k))
            elif what == "input" and ref is not None and ref not in ancestors:
                errors.append(ConfigError(f"{{input:{ref}}}: '{ref}' is not a stage this one waits for "
                                          f"(directly or through `after`)", stage=name, key=k))
            elif what != "input" and ref is not None:
                errors.append(ConfigError(f"{{{what}}} takes no stage name", stage=name, key=k))


def plain_paths(pairs: List[Tuple[str, str]]) -> List[Tuple[str, str]]:
    """The (key, path) pairs whose path is a plain local path: no placeholder, no URL."""
    return [(k, p) for k, p in pairs if not PLACEHOLDER.search(p) and "://" not in p]
