"""Resolve dotted targets ('pkg.mod.Name' or 'pkg.mod:func'). Standard library only.

`python -m jobs.runtime.targets` is the preflight check the launcher runs with each stage environment's
interpreter: it reads {"modules": [...], "targets": [...]} on stdin, imports the modules, resolves the
targets, and prints {name: error} for what failed (empty: all good) as JSON. A target
'pkg.mod.Config#name' asks whether the dataclass Config has a field `name` (keyword arguments a
stage passes to a library's config class, e.g. align.trl into TRL's SFTConfig)."""
from __future__ import annotations

import importlib
import json
import sys
from typing import Any


def locate(path: str) -> Any:
    """The object a target names; for 'a.b.C' the longest importable module prefix wins."""
    if ":" in path:
        module, _, attr = path.partition(":")
        obj = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj
    parts = path.split(".")
    for i in range(len(parts) - 1, 0, -1):
        module = ".".join(parts[:i])
        try:
            obj = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name and (module == e.name or module.startswith(e.name + ".")):
                continue  # this prefix is not a module: try a shorter one
            raise  # the module exists but needs something that is missing: say so
        for part in parts[i:]:
            obj = getattr(obj, part)
        return obj
    return importlib.import_module(path)


def main() -> int:
    request = json.load(sys.stdin)
    problems = {}
    for m in request.get("modules", []):
        try:
            importlib.import_module(m)
        except Exception as e:  # noqa: BLE001 - report every failure by name
            problems[m] = f"cannot import {m}: {type(e).__name__}: {e}"
    for t in request.get("targets", []):
        try:
            path, _, field = t.partition("#")
            obj = locate(path)
            if field:
                import dataclasses

                names = {f.name for f in dataclasses.fields(obj)}
                if field not in names:
                    near = __import__("difflib").get_close_matches(field, names, n=1)
                    problems[t] = (f"{path.rsplit('.', 1)[-1].split(':')[-1]} has no field {field!r}"
                                   + (f"; did you mean {near[0]!r}?" if near else ""))
            elif not callable(obj):
                problems[t] = f"{t} is not a class or function"
        except Exception as e:  # noqa: BLE001
            problems[t] = f"{type(e).__name__}: {e}"
    print(json.dumps(problems))
    return 0


if __name__ == "__main__":
    sys.exit(main())
