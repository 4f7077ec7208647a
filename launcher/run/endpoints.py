"""`launcher endpoints <run>`: what the run's serve stages published (stages/<stage>/endpoints/<point>.json,
written by jobs/kinds/serve.py), with a live /health check of those that say they are ready."""
from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, List

from jobs import layout


def healthy(url: str, timeout: float = 3.0, path: str = "/health") -> bool:
    """GET <server><path> (url is the OpenAI base, .../v1; path: the engine's health route, which the
    endpoint file names: llama.cpp's is /v1/models)."""
    try:
        with urllib.request.urlopen(url.rsplit("/v1", 1)[0] + path, timeout=timeout) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def endpoints(run_dir: Path, check: bool = True) -> List[Dict[str, Any]]:
    rows = []
    for f in sorted(Path(run_dir).glob("stages/*/endpoints/*.json")):
        info = layout.read_json(f, None)
        if not isinstance(info, dict):
            continue
        row = {"stage": f.parent.parent.name, "point": int(f.stem), **info}
        if check and row.get("state") == "ready" and not healthy(row["url"], path=row.get("health") or "/health"):
            row["state"] = "unreachable"
        rows.append(row)
    return rows
