"""The default run root, the one rule every verb follows: $LAUNCHER_RUN_ROOT, else ./runs (resolved
against the current directory). Standard library only, so that `launcher schedule`'s firing wrapper
and shell completion read it without importing the planner (launcher.run.rundir re-exports it)."""
from __future__ import annotations

import os
from pathlib import Path


def default_root() -> Path:
    return Path(os.environ.get("LAUNCHER_RUN_ROOT", "runs")).resolve()
