"""Whether the launcher asked this task to stop, for code a task starts as its own process (a Hydra
app of kind=hydra_app or of the Hydra launcher plugin, a command stage's Python):

    from jobs.runtime.stop_request import should_stop

    should_stop()          # once, early, in the main thread: installs the handlers (False)
    for step in ...:
        if should_stop():  # the stop signal or a SIGTERM arrived
            save(); sys.exit(99)  # non-zero: the task is requeued and the next attempt continues

The task forwards the stop signal (`$LAUNCHER_STOP_SIGNAL`, USR2 by default: Slurm's --signal before
the time limit) and a SIGTERM (preemption, `scontrol requeue`) to its child's process group (jobs.task
run_child); without a handler the child dies of it and the next attempt starts from scratch. Signal
handlers can only be installed from the main thread (Python's `signal.signal`). Standard library only:
the app's interpreter finds `jobs` on the PYTHONPATH every task gets (the run's code snapshot)."""
from __future__ import annotations

import os
import signal
from typing import List, Optional

_received: List[str] = []
_installed = False


def install() -> None:
    """Handle the stop signal and SIGTERM by remembering them (idempotent)."""
    global _installed
    if _installed:
        return
    for name in dict.fromkeys((os.environ.get("LAUNCHER_STOP_SIGNAL") or "USR2", "TERM")):
        signal.signal(getattr(signal, "SIG" + name), _remember)
    _installed = True


def _remember(signum, _frame) -> None:
    _received.append(signal.Signals(signum).name)


def should_stop() -> bool:
    """True once the stop signal or a SIGTERM has arrived (installs the handlers on the first call)."""
    install()
    return bool(_received)


def reason() -> Optional[str]:
    """The first signal that asked to stop ('SIGUSR2', 'SIGTERM'), or None."""
    return _received[0] if _received else None
