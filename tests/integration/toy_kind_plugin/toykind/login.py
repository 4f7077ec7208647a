"""The toy kind `greet`, login side: writes `greet.times` lines of `greet.text` per task."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Tuple

from launcher.kinds.base import Kind, Problems


@dataclass
class Greet:
    text: str = "hello"
    times: int = 1


class GreetKind(Kind):
    name = "greet"
    section, schema = "greet", Greet
    payload_keys = ("greet",)
    runner_module = "toykind.node"

    def check_config(self, p: Problems, st: Dict[str, Any]) -> None:
        if st["greet"]["times"] < 1:
            p.add("greet.times", f"must be >= 1, got {st['greet']['times']}")

    def targets(self, stage) -> List[Tuple[str, str]]:
        return [(f"pipeline.stages.{stage.name}.greet", f"{self.runner}:run")]

    def describe(self, plan, stage, plan_dir) -> List[str]:
        g = stage.payloads[0]["greet"]
        return [f"{stage.name}: greets {g['text']!r} x {g['times']} per task"]
