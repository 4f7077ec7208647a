"""`launcher runs` over thousands of runs: an SQLite index of the run directories, kept beside the run
links (launcher/run/runindex.py state_dir()/runs.sqlite, one table for every run root, keyed by root and
run id). The run directories stay the truth: the index is a cache of what `launcher runs` would read
from them, rebuilt from the files at any time (`launcher runs --reindex`, or by deleting the file).

What a query reads: one directory listing of the run root, and three stat() calls per run (run.json,
submissions.jsonl, submission-failed.json: their sizes and mtimes are the row's signature). A row is
read again from its directory when its signature changed (a verb wrote the run: run, resume, cancel,
a failed launch) or, for an UNFINISHED run, when one of its marker folders changed (tasks on compute
nodes write markers without any verb: such a run can turn COMPLETED or FAILED at any time; a marker
is renamed into its folder, which changes the folder's mtime). Rows are otherwise served from the index, so a year of nightly runs costs the listing and the stats, not thousands of
plan and marker reads. benchmarks/bench_runs_index.py measures it against the directory scan.

SQLite's own locking serializes writers (two `runs` at once: one waits, up to 30 s); an index that cannot
be opened or written (a read-only state directory, a filesystem without locks) costs speed, never an
answer: the rows then come from the directory scan.
"""
from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional

from launcher.run import runindex
from launcher.run.rundir import SUBMISSION_FAILED, Run, list_runs

STATES = ("COMPLETED", "FAILED", "UNFINISHED")
FIELDS = ("run", "state", "pipeline", "cluster", "campaign", "created", "points", "jobs", "path")
_SIGNED = ("run.json", "submissions.jsonl", SUBMISSION_FAILED)
SCHEMA_VERSION = 2  # PRAGMA user_version: an index of another layout is dropped and rebuilt
SCHEMA = """CREATE TABLE IF NOT EXISTS runs (
    root TEXT NOT NULL, run TEXT NOT NULL, sig TEXT NOT NULL, msig TEXT, state TEXT NOT NULL, pipeline TEXT,
    cluster TEXT, campaign TEXT, created REAL, points INTEGER, jobs INTEGER, path TEXT,
    PRIMARY KEY (root, run));
CREATE INDEX IF NOT EXISTS runs_by_created ON runs (root, created DESC, run DESC);"""
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def db_path() -> Path:
    """runs.sqlite in the launcher's state directory ($LAUNCHER_STATE_DIR, else $XDG_STATE_HOME/launcher,
    else ~/.local/state/launcher)."""
    return runindex.state_dir() / "runs.sqlite"


def parse_since(text: str) -> float:
    """'7d', '12h', '30m', '90s', '2w' -> seconds. Raises ValueError naming the accepted forms."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text or "")
    if not m:
        raise ValueError(f"expected a duration like 90s, 30m, 12h, 7d or 2w, not {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def row_of(run: Run) -> Dict[str, Any]:
    """What `launcher runs` shows of one run, from its directory alone (no scheduler query)."""
    from launcher.run.status import recorded_state

    return {"run": run.id, "state": recorded_state(run), "pipeline": run.meta.get("pipeline", "?"),
            "cluster": run.meta.get("cluster", "?"), "campaign": run.meta.get("campaign", run.id),
            "created": run.meta.get("created", 0), "points": len(run.meta.get("points", [])),
            "jobs": len(run.submissions()), "path": str(run.path)}


def runs(root: Path, campaign: Optional[str] = None, state: Optional[str] = None,
         since_s: Optional[float] = None, limit: Optional[int] = None, reindex: bool = False) -> List[Dict[str, Any]]:
    """The runs under `root`, newest first (created, then id), filtered: `campaign` (run.json's, exact),
    `state` (one of STATES), created within the last `since_s` seconds; at most `limit` rows. Each row
    has FIELDS. `reindex`: forget what the index holds for this root and read every run again."""
    root = Path(root).resolve()
    try:
        con = _connect()
    except (sqlite3.Error, OSError):
        return _filtered((row_of(r) for r in list_runs(root)), campaign, state, since_s, limit)
    try:
        with con:  # one transaction: a second `runs` waits for it rather than seeing half an update
            _refresh(con, root, reindex)
        return _select(con, root, campaign, state, since_s, limit)
    except sqlite3.Error:
        return _filtered((row_of(r) for r in list_runs(root)), campaign, state, since_s, limit)
    finally:
        con.close()


def _connect() -> sqlite3.Connection:
    path = db_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(str(path), timeout=30)
    if con.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
        con.executescript(f"DROP TABLE IF EXISTS runs; PRAGMA user_version = {SCHEMA_VERSION};")
    con.executescript(SCHEMA)
    return con


def _signature(run_dir: str) -> Optional[str]:
    """Sizes and mtimes of the files a verb writes; None when run.json is missing (not a run). Plain
    strings, not pathlib: at 10,000 runs pathlib's joins cost more than the stat calls."""
    parts = []
    for name in _SIGNED:
        try:
            st = os.stat(os.path.join(run_dir, name))
        except (FileNotFoundError, NotADirectoryError):
            if name == "run.json":
                return None
            parts.append("-")
            continue
        parts.append(f"{st.st_size}:{st.st_mtime_ns}")
    return "/".join(parts)


MTIME_SLACK_NS = 2_000_000_000  # filesystems with coarse timestamps (ext3, some NFS servers: 1 s)


def _marker_signature(run_dir: str) -> Optional[str]:
    """The modification times of the run's marker folders (stages/<stage>/markers/<hash>/): a task's
    marker is written beside and renamed into its folder, which changes the folder's mtime. An
    UNFINISHED run whose markers and ledger did not change has not changed state. None when a folder
    changed within the last MTIME_SLACK_NS (a second marker in the same timestamp tick would not change
    it again): such a run is read again next time."""
    parts, newest = [], 0
    try:
        stages = sorted(os.scandir(os.path.join(run_dir, "stages")), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError):
        return ""
    for stage in stages:
        try:
            for h in sorted(os.scandir(os.path.join(stage.path, "markers")), key=lambda e: e.name):
                mtime = h.stat().st_mtime_ns
                parts.append(f"{stage.name}/{h.name}:{mtime}")
                newest = max(newest, mtime)
        except (FileNotFoundError, NotADirectoryError):
            continue
    if time.time_ns() - newest < MTIME_SLACK_NS:  # a marker written in the same tick would not show
        return None
    return ",".join(parts)


def _refresh(con: sqlite3.Connection, root: Path, reindex: bool) -> None:
    if reindex:
        con.execute("DELETE FROM runs WHERE root = ?", (str(root),))
    known = {run: (sig, state, msig) for run, sig, state, msig in
             con.execute("SELECT run, sig, state, msig FROM runs WHERE root = ?", (str(root),))}
    try:
        names = [e.name for e in os.scandir(root) if e.is_dir()]
    except FileNotFoundError:
        names = []
    for gone in known.keys() - set(names):
        con.execute("DELETE FROM runs WHERE root = ? AND run = ?", (str(root), gone))
    base = str(root)
    for name in names:
        path = os.path.join(base, name)
        sig = _signature(path)
        old = known.get(name)
        msig = None
        if old is not None and old[0] == sig:
            if old[1] != "UNFINISHED":
                continue
            msig = _marker_signature(path)
            if msig is not None and msig == old[2]:
                continue
        if sig is None or not sig.endswith("/-"):  # no run.json, or a launch that failed (submission-failed.json)
            if old is not None:  # a failed launch, or no longer a run
                con.execute("DELETE FROM runs WHERE root = ? AND run = ?", (str(root), name))
            continue
        try:
            row = row_of(Run(root / name))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # torn or foreign JSON: not listed now, read again next time
        if row["state"] == "UNFINISHED" and msig is None:
            msig = _marker_signature(path)
        con.execute(f"INSERT OR REPLACE INTO runs (root, sig, msig, {', '.join(FIELDS)}) VALUES "
                    f"(?, ?, ?, {', '.join('?' * len(FIELDS))})",
                    (str(root), sig, msig if row["state"] == "UNFINISHED" else None, *(_sql(row[f]) for f in FIELDS)))


def _sql(value: Any) -> Any:
    return value if value is None or isinstance(value, (str, int, float)) else json.dumps(value)


def _select(con: sqlite3.Connection, root: Path, campaign: Optional[str], state: Optional[str],
            since_s: Optional[float], limit: Optional[int]) -> List[Dict[str, Any]]:
    where, args = ["root = ?"], [str(root)]
    if campaign is not None:
        where.append("campaign = ?")
        args.append(campaign)
    if state is not None:
        where.append("state = ?")
        args.append(state)
    if since_s is not None:
        where.append("created >= ?")
        args.append(time.time() - since_s)
    sql = f"SELECT {', '.join(FIELDS)} FROM runs WHERE {' AND '.join(where)} ORDER BY created DESC, run DESC"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    return [dict(zip(FIELDS, r)) for r in con.execute(sql, args)]


def _filtered(rows: Iterable[Dict[str, Any]], campaign: Optional[str], state: Optional[str],
              since_s: Optional[float], limit: Optional[int]) -> List[Dict[str, Any]]:
    """The same filters over rows read from the directories (no index)."""
    now = time.time()
    out = [r for r in rows if (campaign is None or r["campaign"] == campaign) and (state is None or r["state"] == state)
           and (since_s is None or r["created"] >= now - since_s)]
    return out if limit is None else out[:limit]
