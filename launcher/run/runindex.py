"""Where your runs are, whatever their run root: one symlink per run, <state>/runs/<run id> -> the run
directory, made when `run` writes the directory. So `launcher status <id>` (every verb taking a run)
finds a run started with run_root=/elsewhere, from any directory, without --root.

<state> is $LAUNCHER_STATE_DIR, else $XDG_STATE_HOME/launcher, else ~/.local/state/launcher. A link is
made beside its place and renamed over it (atomic: no lock, no file rewritten, so two launches at once
cannot lose each other's entry); a link whose run directory is gone is ignored."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Optional


def state_dir() -> Path:
    if os.environ.get("LAUNCHER_STATE_DIR"):
        return Path(os.environ["LAUNCHER_STATE_DIR"])
    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "launcher"


def index_dir() -> Path:
    return state_dir() / "runs"


def record(run_dir: Path) -> None:
    """Best effort: a state directory that cannot be written costs finding the run by id from elsewhere
    (its run root still lists it), never the run."""
    run_dir = Path(run_dir).resolve()
    tmp = index_dir() / f".{run_dir.name}.{os.getpid()}.tmp"
    try:
        tmp.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(run_dir, tmp)
        os.replace(tmp, index_dir() / run_dir.name)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()


def lookup(run_id: str) -> Optional[Path]:
    """The directory of the run with this id, if one was recorded and still has its run.json."""
    if not run_id or "/" in run_id or run_id.startswith("."):
        return None
    try:
        target = Path(os.readlink(index_dir() / run_id))
    except OSError:
        return None
    return target if (target / "run.json").exists() else None
