"""What a scheduler's status query returns (launcher.slurm.Slurm.query, launcher.local.Local.query)."""
from __future__ import annotations

from typing import Dict, Optional


class Answer(dict):
    """{array job id: {array index: task state}} (a plain dict to every reader that wants only states),
    plus what the same query said about the tasks, where it said it:
    - reasons:  {array job id: {array index: why the task is in its state}}, in Slurm's words
      (squeue's %r: Priority, Resources, Dependency, QOSMaxGRESPerUser, ReqNodeNotAvail, ...);
    - restarts: {array job id: {array index: times the task was requeued}}."""

    def __init__(self, states=(), reasons: Optional[Dict[str, Dict[int, str]]] = None,
                 restarts: Optional[Dict[str, Dict[int, int]]] = None):
        super().__init__(states)
        self.reasons: Dict[str, Dict[int, str]] = reasons or {}
        self.restarts: Dict[str, Dict[int, int]] = restarts or {}

    def reason(self, job: str, index: int) -> Optional[str]:
        return self.reasons.get(job, {}).get(index)

    def restart_count(self, job: str, index: int) -> Optional[int]:
        return self.restarts.get(job, {}).get(index)
