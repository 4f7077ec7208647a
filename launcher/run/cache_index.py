"""What the cache lookup (launcher/run/cache.py) learned about each run of a root, kept in
`<root>/.cache-index.json` so that a run root of many runs is not re-read at every `launcher run`:
per run, the signature of its plan.json (size, mtime) and the sources of the points it completed
(stage, key, source). A completed point stays completed while its plan.json is the same (markers are
never removed; `resume --force` rewrites plan.json; `gc` removes the whole run), so only runs whose
plan.json changed, new runs and the points not completed yet are read again.

Derived from the files only: deleting it costs one full read. Written atomically by whoever looked
(normally under the cache lock; a concurrent `launcher plan` may write the same facts). Login node only.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional

from jobs import layout

NAME = ".cache-index.json"
VERSION = 1


def signature(run_dir: Path) -> Optional[List[int]]:
    try:
        st = (run_dir / "plan.json").stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


class Index:
    """{run dir: {"sig": [size, mtime_ns], "done": [[stage, key, source], ...], "all": bool}} of one root."""

    def __init__(self, root: Path):
        self.path = Path(root) / NAME
        data = None
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            pass
        self.runs: Dict[str, dict] = data["runs"] if isinstance(data, dict) and data.get("version") == VERSION else {}
        self.changed = False

    def done(self, run_dir: Path, sig: Optional[List[int]]) -> Optional[list]:
        """The points of a run that had completed every point it computes, if its plan.json is the one
        they were read from; None: read the run (new, changed, or not complete when last read)."""
        entry = self.runs.get(str(run_dir))
        return entry["done"] if entry and entry["all"] and sig is not None and entry["sig"] == sig else None

    def record(self, run_dir: Path, sig: Optional[List[int]], done: list, whole: bool) -> None:
        """`done`: [[stage, key, source]] of its completed points; `whole`: no point is left to complete."""
        entry = {"sig": sig, "done": done, "all": whole}
        if sig is not None and self.runs.get(str(run_dir)) != entry:
            self.runs[str(run_dir)] = entry
            self.changed = True

    def save(self, present: List[Path]) -> None:
        """Write it (atomically) when something changed, without the runs that are gone."""
        keep = {str(p) for p in present}
        gone = [r for r in self.runs if r not in keep]
        for r in gone:
            del self.runs[r]
        if (self.changed or gone) and self.runs:
            try:
                layout.atomic_write_json(self.path, {"version": VERSION, "runs": self.runs})
            except OSError:
                pass  # a cache: the next lookup reads the runs again
