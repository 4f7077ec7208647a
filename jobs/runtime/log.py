"""The task's log line: `[launcher HH:MM:SS] message` on stderr, flushed (Slurm's task log, or the
local backend's). Standard library only."""
from __future__ import annotations

import sys
import time


def log(msg: str) -> None:
    print(f"[launcher {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)
