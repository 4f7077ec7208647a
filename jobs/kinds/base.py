"""What a stage kind is on the compute node: a module (a Runner) whose run(task) does one array task's
work, given a TaskHandle (what it may use of the task: jobs.task.Task implements it).

A runner module defines:
    run(task: TaskHandle) -> dict | None     the work; a dict becomes the task's result.json
    reruns_when_complete: bool               runs again although the task has a completion marker
                                             (a server: its marker only says it served once)
    resolves_hub_references: bool            hf://org/name@rev strings of the payload are replaced by
                                             their snapshot in the hub cache before run() (False: the
                                             kind handles hub references itself: fetch, publish)

run() raises jobs.context.Requeue to be requeued (after checkpointing), jobs.context.Cancel to end as
cancelled, anything else to fail. It imports its stage library inside run(), never at module level:
the runner module is imported before the task knows it has work to do."""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Protocol, runtime_checkable

from jobs.context import TaskContext


@runtime_checkable
class Runner(Protocol):
    reruns_when_complete: bool
    resolves_hub_references: bool

    def run(self, task: "TaskHandle") -> Optional[Dict[str, Any]]: ...


class TaskHandle(Protocol):
    """One array task as a kind sees it. Read-only attributes:

    spec         the stage spec (stages/<stage>/spec.json, written at submission)
    payload      this sweep point's part of it (the stage's config sections, hub references resolved)
    stage, task  the stage name; the array task (point * tasks_per_point + index)
    point, index the sweep point; the task's index within it
    rank         SLURM_PROCID (the node of a one-task-per-node step)
    job_id       "<array job>_<index>" on Slurm, the local backend's id otherwise
    restarts     how many times this task was requeued before
    run_dir      the run directory
    ctx          the TaskContext (output_dir: where the output is written, renamed into place on
                 success; checkpoint_dir: kept across requeues; should_stop())
    final_out    where the output will be once the task succeeded
    terminated   a SIGTERM came that the task did not ask for (the scheduler is ending this attempt)
    """

    spec: Dict[str, Any]
    payload: Dict[str, Any]
    stage: str
    task: int
    point: int
    index: int
    rank: int
    job_id: str
    restarts: int
    run_dir: Path
    ctx: TaskContext
    final_out: Path
    terminated: bool

    def environment(self) -> Dict[str, str]:
        """This process's environment + the stage's env + the LAUNCHER_* variables: for a child process."""

    def export_environment(self) -> None:
        """The LAUNCHER_* variables and the stage's env, into this process (work done in-process)."""

    def log(self, msg: str) -> None:
        """One line of the task's log."""

    def write_result(self, result: Any) -> None:
        """result.json of the output now (run() returning a dict does the same)."""

    def run_child(self, argv: List[str], env: Mapping[str, str], failure: str, stop: str = "signal",
                  stop_file: Optional[Path] = None, cwd: Optional[Path] = None,
                  on_line: Optional[Callable[[str], Any]] = None) -> None:
        """Run argv in a session of its own (in `cwd`; default the task's, the code snapshot) and wait.
        The stop request (the pre-timeout signal, or a SIGTERM) reaches it as stop="signal": that signal,
        forwarded to its process group; or as stop="file": `stop_file` (default <checkpoint_dir>/STOP,
        removed before the start) is created. Raises Requeue when it failed after a stop request,
        RuntimeError(failure.format(rc=...)) when it failed otherwise. on_line: the child's stdout is
        piped, copied to the task's log line by line and each line handed to on_line (progress readers)."""

    def start_child(self, argv: List[str], env: Mapping[str, str], stop: str = "signal",
                    stop_file: Optional[Path] = None, die_with_parent: bool = False,
                    cwd: Optional[Path] = None, on_line: Optional[Callable[[str], Any]] = None) -> subprocess.Popen:
        """Start argv as run_child does, without waiting (a server): stop it with stop_child()."""

    def stop_child(self, grace: float, what: str = "the child") -> bool:
        """SIGTERM to the started child's session, SIGKILL after `grace` s; True when nothing of it is left."""
