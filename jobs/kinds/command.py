"""kind=command: the stage's bash script (`bash -euo pipefail -c <command>`) in a session of its own,
with the task's environment (LAUNCHER_* and the stage's env). The stop request reaches it as the stop
signal (or SIGTERM), forwarded to its process group: a script that traps it saves and exits non-zero,
and the task is requeued. Standard library only."""
from __future__ import annotations

reruns_when_complete = False
resolves_hub_references = True


def run(task) -> None:
    task.run_child(["bash", "-euo", "pipefail", "-c", task.payload["command"]], task.environment(),
                   "command exited with status {rc}")
