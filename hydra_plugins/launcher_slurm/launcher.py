"""The Launcher of `hydra/launcher=launcher_slurm`: launch() submits the batch of Hydra jobs as one
stage of kind hydra_app (one array task per job) through the launcher's plan, render and submit path
and returns at once (_submit.py); a problem it finds (nothing submitted then) ends the multirun with the
launcher's message and exit code, no traceback. Imports Hydra only (Hydra imports this module whenever
an app starts)."""
from __future__ import annotations

import sys
from typing import Any, Optional, Sequence

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class LauncherSlurm(Launcher):
    def __init__(self, **params: Any) -> None:
        # hydra.launcher of the multirun; launch() reads each job's own (a config group may change it)
        self.params = params
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None
        self.task_function: Optional[TaskFunction] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from hydra_plugins.launcher_slurm._submit import launch
        from launcher.errors import LauncherError

        assert self.config is not None and self.hydra_context is not None
        try:
            return launch(self.config, self.hydra_context.config_loader, job_overrides, initial_job_idx)
        except LauncherError as e:  # a problem of the config or the cluster: its message, as `launcher run` says it
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(e.exit_code) from None
