"""kind=command: a bash script per task (`command`, run with `bash -euo pipefail -c`)."""
from __future__ import annotations

from typing import Any, Dict, List

from launcher.errors import ConfigError
from launcher.kinds.base import Kind, Problems
from launcher.plan.shell import bash_syntax_error


class Command(Kind):
    name = "command"
    reads = ("command",)

    def check_config(self, p: Problems, st: Dict[str, Any]) -> None:
        if not (st["command"] or "").strip():
            p.add("command", "kind=command needs a command")

    def preflight(self, plan, stage) -> List[ConfigError]:
        commands = list(dict.fromkeys(p["command"] for p in stage.payloads))
        # One `bash -n` for all sweep points (each wrapped in a function); one per command only to
        # find the culprit.
        if bash_syntax_error("".join(f"__point{i}() {{\n{c}\n}}\n" for i, c in enumerate(commands))):
            msg = next(filter(None, map(bash_syntax_error, commands)), "syntax error")
            return [ConfigError(f"command is not valid bash: {msg}", stage=stage.name,
                                key=f"pipeline.stages.{stage.name}.command")]
        return []


KIND = Command()
