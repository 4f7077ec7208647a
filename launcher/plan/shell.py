"""Shell text the tasks run, checked on the login node."""
from __future__ import annotations

import subprocess


def bash_syntax_error(script: str) -> str:
    """`bash -n`'s complaint about a script ('' when it parses)."""
    p = subprocess.run(["bash", "-n"], input=script + "\n", capture_output=True, text=True)
    return p.stderr.strip() if p.returncode != 0 else ""
