"""What a running task sees: where to read, where to write, and whether it must stop and checkpoint."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict


class Requeue(Exception):
    """Raised (by ctx.requeue()) after the task saved its state: requeue me and continue later."""


class Cancel(Exception):
    """This task cannot do its work because what it waits on failed: end it as cancelled, not failed
    (what waits on it is then cancelled too, as Slurm does for a failed dependency)."""


@dataclass
class TaskContext:
    run_dir: Path
    run_id: str
    stage: str
    task: int  # global array task (point * num_tasks + index)
    index: int  # task within its sweep point
    num_tasks: int
    point: int
    params: Dict[str, Any]
    output_dir: Path  # renamed to its final place only if the task succeeds
    checkpoint_dir: Path  # survives requeues
    inputs: Dict[str, Path]  # parent stage → its output folder for this sweep point
    restart_count: int
    stop_requested: threading.Event = field(default_factory=threading.Event)

    def should_stop(self) -> bool:
        """True once the pre-timeout or preemption signal arrived: save state, then call requeue()."""
        return self.stop_requested.is_set()

    def requeue(self) -> None:
        raise Requeue()
