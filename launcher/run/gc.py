"""`launcher gc [--dry-run] [--older-than 30d] [--root DIR]`: remove run outputs under a run root that no
run references any more, printing each path and its bytes, and the total.

What goes:
- **Old cache entries**: a whole run directory created more than `--older-than` ago (default 30 days)
  that no remaining run reads from (plan.json `cached`: the runs launcher/run/cache.py made reference it;
  checked to a fixed point, so a chain of old runs goes together).
- **Partial attempts**: in a run kept, the folders a failed, cancelled or killed attempt left behind:
  a task's unfinished output `out/<point>/.<index>.partial-<job>-<restart>` (jobs/task.py renames
  it into place only on success), a checkpoint set aside as incomplete `checkpoint-N.partial-<time>`
  (jobs/runtime/checkpoints.py) and an interrupted retention removal `checkpoint-N.removing-<pid>`
  (jobs/runtime/retention.py). Complete checkpoints stay: `launcher resume` continues from them.

What never goes: anything of a run with a queued or running task (one status query per run through
the run's own backend, launcher/run/status.py; a run whose scheduler does not answer is left alone) or of a
run such a run reads from. Removal is rename-then-delete under the run's lock (the lock resume and
cancel take), so a half-removed run is never taken for a run (no run.json under its name).
"""
from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Set

from launcher.errors import LauncherError, UsageError

DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw]?)$")
UNITS = {"": 86400, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# Folders a failed or interrupted attempt leaves (see the module docstring), relative to a run directory.
PARTIAL_GLOBS = ("stages/*/out/*/.*.partial-*", "stages/*/ckpt/*/checkpoint-*.partial-*",
                 "stages/*/ckpt/*/checkpoint-*.removing-*")


@dataclass
class Item:
    path: Path
    bytes: int
    why: str


def parse_age(text: str) -> float:
    """Seconds of `--older-than` ("30d", "12h", "90m", "3600s", "2w"; a bare number is days)."""
    m = DURATION.match(text.strip())
    if not m:
        raise UsageError(f"--older-than {text!r}: a duration such as 30d, 12h, 90m, 2w (a bare number is days)")
    return float(m.group(1)) * UNITS[m.group(2)]


def size(path: Path) -> int:
    """Bytes under `path` (files as they are stored, symbolic links not followed)."""
    total = 0
    for top, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(top, name)).st_size
            except OSError:
                pass
    return total


def references(run_dir: Path) -> Optional[Set[str]]:
    """The run directories (real paths) whose outputs this run reads (plan.json stages' `cached`); None
    when its plan cannot be read (then the run and everything are treated as read: nothing old goes)."""
    from jobs import layout

    try:
        stages = (layout.read_json(run_dir / "plan.json", {}) or {})["stages"]
        return {os.path.realpath(src["run"]) for st in stages for src in (st.get("cached") or {}).values()}
    except (KeyError, TypeError, AttributeError, ValueError, OSError):
        return None


def collect(root: Path, older_than_s: float, active: Callable[[Path], Optional[bool]],
            now: Optional[float] = None) -> tuple[List[Item], List[str]]:
    """(what to remove, notes on what is left alone and why). active(run_dir): whether the run has a
    queued or running task (None: the scheduler did not say)."""
    from jobs import layout

    now = time.time() if now is None else now
    runs = sorted(p for p in Path(root).iterdir() if (p / "run.json").is_file()) if Path(root).is_dir() else []
    notes, busy = [], set()
    for r in runs:
        a = active(r)
        if a is None:
            notes.append(f"{r}: left alone: its scheduler did not answer")
        if a is not False:
            busy.add(r)
    refs = {r: references(r) for r in runs}
    if any(v is None for v in refs.values()):
        notes += [f"{r}: its plan.json cannot be read: no old run is removed (it may read any)"
                  for r in runs if refs[r] is None]
        older_than_s = float("inf")
    created = {r: (layout.read_json(r / "run.json", {}) or {}).get("created") or now for r in runs}
    gone: Set[Path] = set()
    while True:  # an old run read only by runs that go too goes with them
        kept_refs = {x for r in runs if r not in gone for x in refs[r] or ()}
        more = {r for r in runs if r not in gone and r not in busy and now - created[r] > older_than_s
                and os.path.realpath(r) not in kept_refs}
        if not more:
            break
        gone |= more
    for r in runs:
        if r in busy and now - created[r] > older_than_s:
            notes.append(f"{r}: old, but a task of it is queued or running: kept")
        elif r not in gone and now - created[r] > older_than_s:
            notes.append(f"{r}: old, but a run reads its outputs: kept")
    items = [Item(r, size(r), f"cache entry: created {(now - created[r]) / 86400:.1f} days ago, read by no run")
             for r in sorted(gone)]
    for r in runs:
        if r in gone or r in busy:
            continue
        for pattern in PARTIAL_GLOBS:
            items += [Item(p, size(p), "partial attempt") for p in sorted(r.glob(pattern)) if p.is_dir()]
    return items, notes


def remove(item: Item) -> None:
    """Rename, then delete (a run directory under its lock, so no resume or cancel runs meanwhile)."""
    target = item.path.with_name(f".gc-{item.path.name}-{os.getpid()}")
    if (item.path / "run.json").is_file():
        from launcher.run.rundir import Run

        with Run(item.path).locked():
            os.replace(item.path, target)
    else:
        os.replace(item.path, target)
    shutil.rmtree(target, ignore_errors=True)


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def run_active(run_dir: Path) -> Optional[bool]:
    """Whether a run has a queued or running task, by the run's own status machinery (one query)."""
    from launcher.run import ops
    from launcher.run.rundir import Run
    from launcher.run.status import ACTIVE

    try:
        st = ops.status(Run(run_dir))
    except (LauncherError, OSError, ValueError, KeyError):
        return None
    return any(s in ACTIVE for stage in st.stages.values() for s in stage.tasks.values())


def gc(root: Path, older_than_s: float, dry_run: bool, echo: Callable[[str], object] = print,
       active: Callable[[Path], Optional[bool]] = run_active) -> Dict[str, object]:
    """Collect, print, and (unless dry_run) remove; {"items": [...], "bytes": total, "dry_run": ...}."""
    items, notes = collect(root, older_than_s, active)
    verb = "would free" if dry_run else "freed"
    done = []
    for it in items:
        if not dry_run:
            try:
                remove(it)
            except FileNotFoundError:
                continue  # another gc took it
        done.append(it)
        echo(f"{verb}\t{it.bytes}\t{human(it.bytes)}\t{it.path}\t{it.why}")
    for n in notes:
        echo(f"note: {n}")
    total = sum(i.bytes for i in done)
    echo(f"total: {verb} {total} bytes ({human(total)}) in {len(done)} path(s) under {root}")
    return {"items": [{"path": str(i.path), "bytes": i.bytes, "why": i.why} for i in done], "bytes": total,
            "dry_run": dry_run}
