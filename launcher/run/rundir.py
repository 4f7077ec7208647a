"""Run directories on the login-node side: create, find, and the submission ledger."""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from filelock import FileLock, Timeout

from jobs import layout

from launcher.run import runindex
from launcher.config.compose import PROJECT_ROOT
from launcher.errors import LauncherError, NotFound
from launcher.plan.model import Plan
from launcher.run.runroot import default_root  # noqa: F401 - the verbs import it from here

LOCK_TIMEOUT_S = 120
# Written into a run directory whose launch failed before anything stayed queued (a submission rolled
# back, a failure while writing the run): the directory is kept for diagnosis, but it is not a run
# that `latest` or `launcher runs` pick. A resume that submits it later removes the file.
SUBMISSION_FAILED = "submission-failed.json"


class Run:
    def __init__(self, path: Path):
        self.path = Path(path).resolve()

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def meta(self) -> Dict[str, Any]:
        return layout.read_json(self.path / "run.json", {})

    def plan(self) -> Plan:
        return Plan.from_json(layout.read_json(self.path / "plan.json"))

    def lock(self) -> FileLock:
        """Serialises run/resume/cancel on one run: two resumes at once submit once."""
        return FileLock(str(self.path / ".lock"), timeout=LOCK_TIMEOUT_S)

    def locked(self):
        """The run's lock, for verbs that change it; only its owner may."""
        owner = self.path.stat().st_uid
        if owner != os.getuid():
            import pwd

            name = next((p.pw_name for p in pwd.getpwall() if p.pw_uid == owner), str(owner))
            raise LauncherError(f"run {self.id} belongs to {name}; only its owner may resume or cancel it")
        lock = self.lock()
        try:
            lock.acquire()
        except Timeout as e:
            raise LauncherError(f"run {self.id} is locked by another launcher for over {LOCK_TIMEOUT_S} s "
                                f"({self.path / '.lock'})") from e
        return lock

    def ledger(self) -> List[Dict[str, Any]]:
        try:
            lines = (self.path / "submissions.jsonl").read_text().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a torn last line from a killed launcher: that sbatch call is not recorded
        return out

    def append_ledger(self, record: Dict[str, Any]) -> None:
        """Login node only. One line per sbatch call, flushed before the next call, so a launcher
        killed mid-submission leaves a ledger that says exactly what is queued."""
        with open(self.path / "submissions.jsonl", "a") as f:
            f.write(json.dumps(dict(record, time=time.time()), sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    @property
    def submission_failed(self) -> Optional[Dict[str, Any]]:
        """What `mark_submission_failed` recorded, or None for a run that was submitted."""
        return layout.read_json(self.path / SUBMISSION_FAILED)

    def mark_submission_failed(self, error: str) -> Path:
        """Keep the directory for diagnosis, but take it out of `latest` and `launcher runs`."""
        path = self.path / SUBMISSION_FAILED
        layout.atomic_write_json(path, {"error": error, "time": time.time(),
                                        "rolled_back": sorted({j for r in self.ledger() for j in r.get("rolled_back", [])})})
        return path

    def submissions(self) -> List[Dict[str, Any]]:
        """Sbatch records, without jobs that a failed submission rolled back."""
        records = self.ledger()
        rolled_back = {j for r in records for j in r.get("rolled_back", [])}
        return [r for r in records if "job_id" in r and r["job_id"] not in rolled_back]


def new_run_id(pipeline: str, name: Optional[str]) -> str:
    suffix = f"-{name}" if name else ""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{pipeline}{suffix}-{secrets.token_hex(2)}"


def code_version() -> Dict[str, Any]:
    """Commit of the project the tasks import, and whether it had uncommitted changes."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(PROJECT_ROOT), *args], capture_output=True, text=True,
                              timeout=10).stdout

    try:
        return {"path": str(PROJECT_ROOT), "commit": git("rev-parse", "HEAD").strip() or None,
                "dirty": bool(git("status", "--porcelain", "--untracked-files=no").strip())}
    except (OSError, subprocess.TimeoutExpired):
        return {"path": str(PROJECT_ROOT), "commit": None, "dirty": None}


def resolve_run(ref: str, root: Optional[Path] = None) -> Run:
    """A run directory, a run id (under root, else wherever `run` put it: launcher.run.runindex), or
    `latest`: the newest run under root (--root, else $LAUNCHER_RUN_ROOT, else ./runs)."""
    root = Path(root) if root else default_root()
    if ref == "latest":
        runs = list_runs(root)
        if not runs:
            raise NotFound(f"no runs under {root}")
        return runs[0]
    for candidate in (Path(ref), root / ref):
        if (candidate / "run.json").exists():
            return Run(candidate)
    indexed = runindex.lookup(ref)
    if indexed:
        return Run(indexed)
    raise NotFound(f"no run '{ref}' (looked for {ref}/run.json, {root / ref}/run.json and "
                   f"{runindex.index_dir() / ref})")


def list_runs(root: Path) -> List[Run]:
    """Runs under root, newest first; launches that failed before anything stayed queued are not runs."""
    if not root.exists():
        return []
    runs = [Run(p) for p in root.iterdir() if (p / "run.json").exists() and not (p / SUBMISSION_FAILED).exists()]
    return sorted(runs, key=lambda r: (r.meta.get("created", 0), r.id), reverse=True)
