"""JSON Lines files that writers append to while readers read them (the run's ledger, histories).
Standard library only.

A writer killed mid-line leaves a half-written last line: read() skips it (and any other line that is
not whole JSON, such as one a later append() terminated), so a reader never raises on what a killed
writer left; append() starts on a fresh line when the file does not end with one, so the next record
is never glued to a torn one."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List


def read(path: str | Path) -> List[Any]:
    """The records of a JSONL file, in order; [] when the file does not exist. Blank lines and lines
    that are not valid JSON (a torn write) are skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # half-written by a writer that was killed: that record was never made
    return out


def append(path: str | Path, record: Dict[str, Any], *, fsync: bool = False, sort_keys: bool = True) -> None:
    """Append one record as one line. fsync: flush it to storage before returning (a ledger that must
    say what was done even if the machine dies next)."""
    extend(path, [record], fsync=fsync, sort_keys=sort_keys)


def extend(path: str | Path, records: List[Dict[str, Any]], *, fsync: bool = False, sort_keys: bool = True) -> None:
    """Append records, one line each, in one write and one flush (a batch of results): a writer killed
    meanwhile leaves whole lines and at most one torn last line, which read() skips."""
    path = Path(path)
    with open(path, "a+b") as f:
        if f.tell() > 0:
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"
        else:
            torn = False
        f.write((b"\n" if torn else b"") + "".join(json.dumps(r, sort_keys=sort_keys) + "\n" for r in records).encode("utf-8"))
        f.flush()
        if fsync:
            os.fsync(f.fileno())
