"""One scheduler answer per run and interval, shared by every watcher of the run: `wait=true`,
`launcher status --watch` in two terminals and `resume --wait` on the same run cost one query per
interval, not one each. The answer (launcher/answer.py: states, reasons, restarts) is kept in
<run>/.status-cache.json with the time it was asked and the jobs it covers; a watcher whose interval
has not passed since then reads it instead of asking. Plain `launcher status` (a person's explicit
question) always asks.

Written atomically (a temporary file renamed over it), so a reader sees a whole answer or the previous
one; a torn or foreign file is ignored and replaced."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Iterable, Optional

from launcher.answer import Answer

NAME = ".status-cache.json"


def _intkeys(d: dict) -> dict:
    return {job: {int(i): v for i, v in by_index.items()} for job, by_index in (d or {}).items()}


def read(path: Path, jobs: Iterable[str], max_age_s: float, now: Optional[float] = None,
         settled: Iterable[str] = ()) -> Optional[Answer]:
    """The cached answer if it was asked for exactly `jobs` (and `settled`: the jobs old enough that
    the scheduler not knowing them means lost) and is younger than max_age_s; else None."""
    try:
        rec = json.loads(Path(path).read_text())
        if (sorted(rec["jobs"]) != sorted(jobs) or sorted(rec.get("settled", [])) != sorted(settled)
                or (now or time.time()) - rec["time"] >= max_age_s):
            return None
        return Answer(_intkeys(rec["states"]), _intkeys(rec.get("reasons")), _intkeys(rec.get("restarts")))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def write(path: Path, jobs: Iterable[str], answer: Any, settled: Iterable[str] = ()) -> None:
    """Best effort: a run directory that cannot be written costs the sharing, never the answer."""
    path = Path(path)
    rec = {"time": time.time(), "jobs": sorted(jobs), "settled": sorted(settled), "states": dict(answer),
           "reasons": getattr(answer, "reasons", {}), "restarts": getattr(answer, "restarts", {})}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(rec))
        os.replace(tmp, path)
    except OSError:
        try:
            tmp.unlink()
        except OSError:
            pass


class SharedQueries:
    """A backend whose `query` is answered from the run's cache when it is younger than `max_age_s`
    (a watcher's current interval) and asks the wrapped backend otherwise; everything else is the
    wrapped backend's. `asked` counts the queries that reached the scheduler."""

    def __init__(self, backend: Any, run_dir: Path, max_age_s: float):
        self._backend, self._path, self.max_age_s, self.asked = backend, Path(run_dir) / NAME, max_age_s, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def query(self, job_ids: Iterable[str], settled: Iterable[str] = ()) -> Any:
        jobs, settled = sorted(job_ids), sorted(settled)
        cached = read(self._path, jobs, self.max_age_s, settled=settled)
        if cached is not None:
            return cached
        answer = self._backend.query(jobs, settled=settled)
        self.asked += 1
        write(self._path, jobs, answer, settled)
        return answer
