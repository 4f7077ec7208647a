"""`python -m jobs.runtime.rankmain <script.py | -m module> args…`: run a training script as torchrun's
worker would, after registering the hang watchdog's stack dump (jobs/runtime/stacks.py), so that
`kill -USR1 <rank>` prints the rank's Python stacks and the rank goes on. The script sees the argv and
`__name__ == "__main__"` it would have seen when started directly. Standard library only."""
from __future__ import annotations

import runpy
import sys
from pathlib import Path

from jobs.runtime.stacks import register_dump


def main(argv: list[str]) -> None:
    """argv: [script, args…] or ["-m", module, args…] (what torchrun would have been given)."""
    if not argv or (argv[0] == "-m" and len(argv) < 2):
        sys.exit("usage: python -m jobs.runtime.rankmain <script.py | -m module> [args...]")
    register_dump()
    if argv[0] == "-m":
        sys.argv = [argv[1]] + argv[2:]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = list(argv)
        sys.path.insert(0, str(Path(argv[0]).resolve().parent))  # as `python script.py`
        runpy.run_path(argv[0], run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
