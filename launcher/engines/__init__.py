"""serve.engine on the login side: one module per inference server (launcher/engines/<module>.py, whose
ENGINE is an Engine), asked by the serve kind (launcher/kinds/serve.py) for its checks, its environment,
what preflight resolves in it and its `launcher plan` text. The node side of each engine is its adapter
(jobs/adapters/vllm.py, llamacpp.py, tgi.py). Standard library only: the login node runs this."""
from __future__ import annotations

import importlib
from typing import Any, Dict, List, Optional, Tuple

from launcher.kinds.base import Problems

# serve.engine -> its module; the first is the default (schema: Serve.engine)
MODULES: Dict[str, str] = {"vllm": "launcher.engines.vllm", "llama.cpp": "launcher.engines.llamacpp",
                           "tgi": "launcher.engines.tgi"}


class Engine:
    """What the launcher knows of one inference server. Subclasses set the attributes and override the
    hooks they need; every hook's default does nothing."""

    name: str = ""
    label: str = ""  # in messages and `launcher plan`
    # The environment a stage of this engine gets when the cluster profile defines one of that name
    # (cluster.stage_environments.<stage> still wins; without it: the serve kind's mapping).
    environment: Optional[str] = None
    # What preflight resolves in the stage's interpreter ('pkg.mod:attr'); None: nothing (a container).
    target: Optional[str] = None
    # serve.speculative.method values it runs
    speculative_methods: Tuple[str, ...] = ()
    # Serve keys only this engine reads (launcher/plan/ignored.py refuses them for the others)
    own_keys: Tuple[str, ...] = ()

    def check(self, p: Problems, s: Dict[str, Any], r: Dict[str, Any]) -> None:
        """Plan-time checks of serve (`s`) and resources (`r`), through p.add("serve.<key>", ...)."""

    def model_problem(self, path: str) -> str:
        """Why a plain-path serve.model cannot be served ('' if it can)."""
        return ""

    def preflight(self, s: Dict[str, Any], env: Dict[str, Any]) -> List[Tuple[str, str]]:
        """(key relative to the stage, message) of what the login node refutes beyond the model's own
        path (a draft model, its vocabulary; the stage's environment `env`, launcher/config/environments.py)."""
        return []

    def describe(self, s: Dict[str, Any]) -> str:
        """The engine's words in the `launcher plan` paragraph."""
        return self.label


def get(name: str) -> Engine:
    """The Engine of serve.engine; KeyError for a name not in MODULES."""
    return importlib.import_module(MODULES[name]).ENGINE


def speculative_problems(engine: Engine, spec: Dict[str, Any]) -> List[Tuple[str, str]]:
    """(key, message) of serve.speculative's plan-time problems for this engine: a method it does not
    run, a draft method without a draft model, a token count below 1."""
    method = spec.get("method")
    if method is None:
        return []
    if method not in ("ngram", "draft"):
        return [("serve.speculative.method", f"unknown method {method!r}: use ngram (prompt lookup) or draft "
                                             f"(a smaller model with the same vocabulary), or null for none")]
    if method not in engine.speculative_methods:
        runs = " or ".join(engine.speculative_methods) or "no speculative decoding"
        return [("serve.speculative.method", f"engine {engine.name} runs {runs}, not {method!r} (docs/serve.md)")]
    out = []
    if method == "draft" and not spec.get("draft_model"):
        out.append(("serve.speculative.draft_model", "method=draft needs a draft model (a path or {input:<stage>}/...)"))
    if method != "draft" and spec.get("draft_model"):
        out.append(("serve.speculative.draft_model", f"is set but method={method} reads no draft model"))
    if int(spec.get("num_speculative_tokens") or 0) < 1:
        out.append(("serve.speculative.num_speculative_tokens",
                    f"must be >= 1, got {spec.get('num_speculative_tokens')}"))
    return out
