"""kind=command: a bash script per task (`command`, run with `bash -euo pipefail -c`)."""
from __future__ import annotations

from typing import Any, Dict, List

from launcher.errors import ConfigError
from launcher.kinds.base import Kind, Problems
from launcher.plan.shell import first_syntax_error


class Command(Kind):
    name = "command"
    reads = ("command",)

    def check_config(self, p: Problems, st: Dict[str, Any]) -> None:
        if not (st["command"] or "").strip():
            p.add("command", "kind=command needs a command")

    def preflight(self, plan, stage) -> List[ConfigError]:
        # each distinct command of the sweep once, in chunks on every core (shell.first_syntax_error)
        msg = first_syntax_error(list(dict.fromkeys(p["command"] for p in stage.payloads)))
        if msg:
            return [ConfigError(f"command is not valid bash: {msg}", stage=stage.name,
                                key=f"pipeline.stages.{stage.name}.command")]
        return []


KIND = Command()
