"""Shell text the tasks run, checked on the login node."""
from __future__ import annotations

import os
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

CHUNK = 1000  # commands per `bash -n` when many are checked (~77 us each: a chunk is ~0.1 s of bash)
SENTINEL = ": ')(' \")(\""  # two quoted strings; a syntax error in a text left inside a ' or " quote


def bash_syntax_error(script: str) -> str:
    """`bash -n`'s complaint about a script ('' when it parses). The script goes through a file, not
    stdin: a thread feeding stdin needs the GIL for every pipe-sized piece, so beside busy Python
    (preflight runs this beside the content keys) a 1 MB script waited seconds to be written."""
    with tempfile.NamedTemporaryFile("w", prefix="launcher-bash-n-", suffix=".sh") as f:
        f.write(script + "\n")
        f.flush()
        p = subprocess.run(["bash", "-n", f.name], stdin=subprocess.DEVNULL, capture_output=True, text=True)
    return p.stderr.strip().replace(f.name, "bash") if p.returncode != 0 else ""


def first_syntax_error(commands: Sequence[str]) -> str:
    """`bash -n`'s complaint about the first of `commands` that does not parse ('' when all do). The
    commands are checked CHUNK at a time, each wrapped in a function (one bash parses a chunk), the
    chunks at once, one bash per core (a 10,000-point sweep's commands: ~0.8 s of bash on one core);
    only a chunk that fails is checked command by command, to name the culprit. A command that parses
    alone is fine even where its chunk does not (a here-document without its end line reads to the end
    of the file, past the function's `}`). Each body ends with SENTINEL: a command left inside a quote
    (which alone does not parse) would otherwise run on into the next command's function, and two such
    (`echo 'don't'` twice) could close each other's quotes and pass; the sentinel's first quote closes it
    and its `)(` is then a syntax error. (It also keeps a comment-only body from being empty.)"""
    chunks = [list(commands[i:i + CHUNK]) for i in range(0, len(commands), CHUNK)]

    def check(chunk: list) -> str:
        return bash_syntax_error("".join(f"__point{i}() {{\n{c}\n{SENTINEL}\n}}\n" for i, c in enumerate(chunk)))

    with ThreadPoolExecutor(max_workers=max(1, min(len(chunks), os.cpu_count() or 1))) as pool:
        failed = [chunk for chunk, error in zip(chunks, pool.map(check, chunks)) if error]
    for chunk in failed:  # in order: the first culprit
        found = next(filter(None, map(bash_syntax_error, chunk)), "")
        if found:
            return found
    return ""
