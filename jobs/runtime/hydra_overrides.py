"""Hydra command-line overrides as strings (kind=hydra_app and the launcher_slurm plugin build them).
Standard library only."""
from __future__ import annotations


def quote(value: str) -> str:
    """A value as one quoted string of Hydra's override grammar, so a path holding ',', '=', ' ' or
    brackets stays one value: 'hydra.run.dir=' + quote(path)."""
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def key(override: str) -> str:
    """The key or config group an override sets, without its +, ++ or ~ prefix and its @package:
    '+hydra/launcher@x=y' -> 'hydra/launcher'."""
    return override.split("=", 1)[0].lstrip("+~").split("@", 1)[0]
