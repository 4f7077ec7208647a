"""Errors that stop the launcher before anything is submitted; each names the stage and config key."""
from __future__ import annotations

from typing import Iterable, List, Optional

from launcher import exitcodes


class LauncherError(Exception):
    """An error the operator can act on; printed without a traceback. The CLI exits `exit_code`."""

    exit_code = exitcodes.FAILED


class NotFound(LauncherError):
    """No such run, stage or task (exit 66): a script polling `status` with a wrong id stops."""

    exit_code = exitcodes.NOT_FOUND


class SchedulerUnavailable(LauncherError):
    """The scheduler could not be asked (exit 69, EX_UNAVAILABLE): a Slurm client failed, timed out or
    is missing. Not "the run failed" (1): a polling loop waits and asks again."""

    exit_code = exitcodes.UNAVAILABLE


class UsageError(LauncherError):
    """The command line asks for something that cannot be (exit 64), e.g. a config directory that is not one."""

    exit_code = exitcodes.USAGE


class ConfigError(LauncherError):
    def __init__(self, message: str, stage: Optional[str] = None, key: Optional[str] = None):
        self.message, self.stage, self.key = message, stage, key
        super().__init__(self.render())

    def render(self) -> str:
        where = []
        if self.stage:
            where.append(f"stage '{self.stage}'")
        if self.key:
            where.append(self.key)
        return f"{': '.join(where)}: {self.message}" if where else self.message


class OverrideError(ConfigError):
    """An override Hydra cannot parse, or a sweep without -m: a usage error (exit 64)."""

    exit_code = exitcodes.USAGE


class ConfigErrors(LauncherError):
    """Every problem found in one pass, so the operator fixes them all at once."""

    def __init__(self, errors: Iterable[ConfigError]):
        self.errors: List[ConfigError] = list(errors)
        lines = "\n".join(f"  - {e.render()}" for e in self.errors)
        super().__init__(f"{len(self.errors)} problem(s) found, nothing was submitted:\n{lines}")


class SubmissionError(LauncherError):
    """A submission failed. `queued`: job ids the failed call queued anyway (a site's sbatch wrapper
    that failed after the real sbatch, a timed-out sbatch): the caller cancels and records them."""

    def __init__(self, message: str, queued=()):
        super().__init__(message)
        self.queued = list(queued)
