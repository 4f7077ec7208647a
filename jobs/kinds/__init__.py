"""One module per stage kind, compute-node side: the registry.

BUILTIN maps a kind's name to the module that runs its tasks (a Runner, jobs/kinds/base.py), imported
only when a task of that kind runs (in the stage's environment). A stage spec may name its runner
module itself ("runner": any importable module path): a kind from a plugin package needs no entry
here. Kinds of the schema that never reach a node (the plan expands them into other stages) are in
EXPANDED."""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any, Dict

_NAMES = ("command", "python", "preprocess", "pretrain", "torchrun", "convert", "evaluate", "align", "serve", "generate",
          "classifier", "cluster", "quantize", "fetch", "publish", "hydra_app")
BUILTIN: Dict[str, str] = {name: f"jobs.kinds.{name}" for name in _NAMES}
# schema kind -> the kind of the stages the plan expands it into (they run; it does not)
EXPANDED: Dict[str, str] = {"minhash": "preprocess"}
# kinds whose stages prepare data with datatrove (their outputs are datatrove folders; a model card
# then describes the data recipe)
_DATATROVE = ("preprocess",)


def names() -> set[str]:
    """Every kind the node side knows: those it runs and those the plan expands."""
    return set(BUILTIN) | set(EXPANDED)


def runner_for(spec: Dict[str, Any]) -> ModuleType:
    """The runner module of a stage spec: spec["runner"] when it names one, else the built-in module of
    spec["kind"]. Raises LookupError for a kind with no runner, ImportError when the module does not import."""
    module = spec.get("runner")
    if not module:
        try:
            module = BUILTIN[spec["kind"]]
        except KeyError:
            raise LookupError(f"no runner for stage kind {spec['kind']!r} (known: {', '.join(sorted(BUILTIN))}); a "
                           f"kind from a plugin names its module in the spec (\"runner\")") from None
    return importlib.import_module(module)


def prepares_data(kind: str) -> bool:
    """Stages of this kind (or expanded into this kind) prepare data with datatrove."""
    return EXPANDED.get(kind, kind) in _DATATROVE
