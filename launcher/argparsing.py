"""The launcher's argument parser: a usage error exits 64 (argparse's own 2 is `status`'s "still
running"), and a mistyped choice (a verb, `env lsit`) is answered with the closest one."""
from __future__ import annotations

import argparse
import difflib
import sys

from launcher import exitcodes


class Parser(argparse.ArgumentParser):
    def _print_message(self, message, file=None):
        # argparse drops every OSError of this write (`--help | head -1` would exit 0 with its help
        # lost): a closed stdout propagates, and cli.main exits 141 quietly as every verb does there.
        if message:
            file = file or sys.stderr
            try:
                file.write(message)
                if file is sys.stdout:
                    file.flush()  # fails here, inside the parser, not at the interpreter's exit
            except BrokenPipeError:
                raise
            except (AttributeError, OSError):
                pass

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(exitcodes.USAGE, f"{self.prog}: error: {message}\n")

    def _check_value(self, action, value):
        # argparse lists every choice but, before Python 3.14's suggest_on_error, never the one meant.
        if action.choices is not None and value not in action.choices:
            close = difflib.get_close_matches(str(value), [str(c) for c in action.choices], n=1)
            if close:
                raise argparse.ArgumentError(action, f"invalid choice: {value!r} (did you mean {close[0]!r}?)")
        super()._check_value(action, value)


def seconds(value: str) -> float:
    """An option's value in seconds > 0 (`status --interval`, `dashboard --interval/--refresh`)."""
    try:
        s = float(value)
    except ValueError:
        s = 0.0
    if not s > 0 or s != s or s == float("inf"):
        raise argparse.ArgumentTypeError(f"expected seconds > 0, not {value!r}")
    return s
