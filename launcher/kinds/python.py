"""kind=python: a function ("package.module:function") called with the task's context."""
from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Tuple

from launcher.kinds.base import Kind, Problems


class Python(Kind):
    name = "python"
    reads = ("target",)

    def check_config(self, p: Problems, st: Dict[str, Any]) -> None:
        if not re.match(r"^[\w.]+:[\w.]+$", st["target"] or ""):
            p.add("target", f"kind=python needs target 'package.module:function', got {st['target']!r}")

    def code_modules(self, payload: Dict[str, Any]) -> Optional[List[str]]:
        """The package (or module) its target lives in: `pkg.mod:fn` runs pkg's files."""
        return [str(payload.get("target") or "").split(":")[0].split(".")[0]]

    def targets(self, stage) -> List[Tuple[str, str]]:
        return [(f"pipeline.stages.{stage.name}.target", p["target"]) for p in stage.payloads if p.get("target")]


KIND = Python()
