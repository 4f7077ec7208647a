"""What `launcher dashboard` shows, as plain data (the page's templates and its JSON endpoints both
render these dicts), and how every viewer shares one answer:

- runs: the runs index (launcher/run/runs_db.py), the same rows as `launcher runs --json`;
- a run: `launcher status --json`'s document (launcher/run/status_view.py status_json), from ONE status
  source per run: the scheduler is asked at the pace of a watcher (launcher/run/backoff.py Paced: fast
  while states change, slower while nothing does, or every --interval seconds), and its answer is the
  run's shared one (launcher/run/status_cache.py), so the dashboard, `status --watch` and `wait=true` on
  the same run cost one query per interval between them;
- a campaign: the report's signal table, curves and cost per variant (launcher/reports/campaign.py,
  report.py), the curves plotted again only when a result file changed.

Every answer is kept for `refresh_s` seconds (the page's polling period): N browsers polling a run cost
one read of its run directory per period, not N. Read-only: nothing here writes into a run directory
except the status cache, as any watcher does."""
from __future__ import annotations

import hashlib
import io
import re
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from launcher.errors import NotFound

COST_TTL_S = 300.0  # costs come from one accounting query (sacct): at most one per campaign every 5 min
_RUN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")  # a run directory's name under the root, no path


class Views:
    """The dashboard's data over one run root. `interval_s`: ask the scheduler every S seconds exactly
    (None: back off from the backend's poll_s up to 5 min while nothing changes); `refresh_s`: how
    long an answer is shared between viewers; `max_runs`: rows of the runs list. Thread-safe (the web
    server answers from a thread pool): each answer is computed once while other viewers wait for it."""

    def __init__(self, root: Path, interval_s: Optional[float] = None, refresh_s: float = 2.0, max_runs: int = 200):
        self.root, self.interval_s, self.refresh_s, self.max_runs = Path(root).resolve(), interval_s, refresh_s, max_runs
        self._lock = threading.Lock()
        self._locks: Dict[Tuple, threading.Lock] = {}
        self._memo: Dict[Tuple, Tuple[float, Any]] = {}
        self._paced: Dict[str, Callable[[], Any]] = {}

    def _shared(self, key: Tuple, ttl_s: float, compute: Callable[[], Any]) -> Any:
        """compute()'s answer, shared for ttl_s seconds; one computation at a time per key[:2] (one
        plot at a time in all: pyplot's state is global)."""
        with self._lock:
            lock = self._locks.setdefault(key[:1] if key[0] == "plot" else key[:2], threading.Lock())
        with lock:
            hit = self._memo.get(key)
            if hit is not None and time.monotonic() - hit[0] < ttl_s:
                return hit[1]
            value = compute()
            with self._lock:
                self._memo[key] = (time.monotonic(), value)
            return value

    def _forget(self, kinds: Tuple[str, ...], name: str, version: str) -> None:
        """Drop the curves and plots of a campaign's older results (kept forever otherwise)."""
        with self._lock:
            for key in [k for k in self._memo if k[0] in kinds and k[1] == name and k[2] != version]:
                del self._memo[key]

    def runs(self, campaign: Optional[str] = None) -> List[Dict[str, Any]]:
        """The runs index's rows (launcher/run/runs_db.py FIELDS), newest first, of one campaign or all."""
        from launcher.run import runs_db

        return self._shared(("runs", campaign), self.refresh_s,
                            lambda: runs_db.runs(self.root, campaign=campaign, limit=self.max_runs))

    def _run(self, run_id: str):
        """The run directory `run_id` directly under the root (nothing else: no path, no `latest`, no
        run elsewhere), else NotFound."""
        from launcher.run.rundir import Run

        path = self.root / run_id
        if not _RUN_NAME.fullmatch(run_id) or not (path / "run.json").is_file():
            raise NotFound(f"no run {run_id!r} under {self.root}")
        return Run(path)

    def run(self, run_id: str) -> Dict[str, Any]:
        """{"meta": run.json's pipeline, cluster, backend, created, overrides, campaign and the number of
        sweep points, "status": `status --json`'s document}."""
        run = self._run(run_id)
        return self._shared(("run", run_id), self.refresh_s, lambda: self._run_view(run))

    def _run_view(self, run) -> Dict[str, Any]:
        from launcher.run.status_view import status_json

        if run.id not in self._paced:
            self._paced[run.id] = self._status_source(run)
        rec = run.meta
        meta = {k: rec.get(k) for k in ("pipeline", "cluster", "backend", "created", "overrides")}
        meta.update(points=len(rec.get("points") or [[]]), campaign=rec.get("campaign") or run.id)  # a count: sweeps are long
        return {"meta": meta, "status": status_json(self._paced[run.id]())}

    def _status_source(self, run) -> Callable[[], Any]:
        """The run's status at a watcher's pace (what `launcher status --watch` does: cli._watch)."""
        from launcher import backends
        from launcher.run import ops
        from launcher.run.backoff import Backoff, Paced
        from launcher.reports.display import fingerprint

        poll = self.interval_s or backends.get(run.meta.get("backend") or "slurm").poll_s
        backoff = Backoff(poll, fixed=bool(self.interval_s), max_s=max(poll, 300.0))
        return Paced(lambda max_age_s: ops.status(run, max_age_s), fingerprint, backoff)

    def campaign(self, name: str) -> Dict[str, Any]:
        """{"name", "runs": [run ids], "results": files read, "version": a digest of the result files
        (names, sizes, mtimes: a plot's URL carries it), "signal": report.signal_table's entries,
        "costs": {variant: cost} or None}; NotFound when no run under the root has this campaign."""
        return self._shared(("campaign", name), self.refresh_s, lambda: self._campaign_view(name))

    def _campaign_runs(self, name: str) -> list:
        from launcher.run.rundir import Run

        runs = [Run(Path(r["path"])) for r in self.runs() if r["campaign"] == name]
        if not runs:
            raise NotFound(f"no run of campaign {name!r} under {self.root}")
        return runs

    def _campaign_view(self, name: str) -> Dict[str, Any]:
        from launcher.reports import campaign

        runs = self._campaign_runs(name)
        files = campaign.result_files(runs)
        version = _digest(files)
        pairs = self._curves(name, version, files)
        costs = self._shared(("costs", name), COST_TTL_S, lambda: campaign.costs(runs, quiet=True))
        return {"name": name, "runs": [r.id for r in runs], "results": len(files), "version": version,
                "signal": [e for e, _ in pairs], "costs": costs}

    def _curves(self, name: str, version: str, files: List[Path]) -> list:
        """report.curves of the campaign's result rows, read again only when `version` changed."""
        from launcher.reports import campaign, report

        self._forget(("curves", "plot"), name, version)
        return self._shared(("curves", name, version), float("inf"),
                            lambda: report.curves(campaign.result_rows(files)))

    def plot(self, name: str, index: int, version: str) -> bytes:
        """Figure `index` of the campaign's curves as PNG bytes (report.plot_curves), for the result
        files of `version`; NotFound when the index is out of range or the results changed since."""
        from launcher.reports import report

        view = self.campaign(name)
        if version != view["version"]:
            raise NotFound(f"the results of campaign {name!r} changed since version {version}: reload")
        pairs = self._curves(name, version, [])  # computed for this version by campaign() above
        if not 0 <= index < len(pairs):
            raise NotFound(f"campaign {name!r} has {len(pairs)} curve(s), no figure {index}")

        def draw() -> bytes:
            buf = io.BytesIO()
            report.plot_curves(pairs[index][1], pairs[index][0], buf)
            return buf.getvalue()

        return self._shared(("plot", name, version, index), float("inf"), draw)


def _digest(files: List[Path]) -> str:
    """12 hex digits over each file's name, size and modification time (a rewritten result changes it)."""
    h = hashlib.sha256()
    for p in files:
        try:
            st = p.stat()
        except OSError:
            continue
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:12]
