"""Code snapshot: tasks import the code as it was at submission, not as it is when they start."""
from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path
from typing import Dict, List

from .compose import PROJECT_ROOT

IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".git", ".venv", ".envs", "runs")


def code_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "code"


def pythonpath(run_dir: Path, extra: List[str]) -> List[Path]:
    """Snapshot root (the jobs package, user files) plus each user directory inside it."""
    root = code_dir(run_dir)
    return [root] + [root / Path(p).name for p in extra if Path(p).is_dir()]


def take(run_dir: Path, extra: List[str]) -> Dict[str, object]:
    """Copy the compute-side package `jobs`, the templates and the pipeline's `code` paths into <run_dir>/code,
    atomically (an earlier snapshot, on `resume --force`, is kept as code.<time>)."""
    dest = code_dir(run_dir)
    tmp = dest.with_name(".code.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(PROJECT_ROOT / "jobs", tmp / "jobs", ignore=IGNORE)
    # Node-side templates (model card, chat template): jobs.templating finds them next to jobs/.
    shutil.copytree(PROJECT_ROOT / "templates", tmp / "templates", ignore=IGNORE)
    for p in map(Path, extra):
        if p.is_dir():
            shutil.copytree(p, tmp / p.name, ignore=IGNORE)
        else:
            shutil.copy2(p, tmp / p.name)
    digest = hashlib.sha256()
    for f in sorted(x for x in tmp.rglob("*") if x.is_file()):
        digest.update(str(f.relative_to(tmp)).encode() + b"\0" + f.read_bytes())
    if dest.exists():
        os.replace(dest, dest.with_name(f"code.{int(time.time())}"))
    os.replace(tmp, dest)
    return {"id": digest.hexdigest()[:16], "sources": [str(PROJECT_ROOT / "jobs"), str(PROJECT_ROOT / "templates"),
                                                  *map(str, extra)]}
