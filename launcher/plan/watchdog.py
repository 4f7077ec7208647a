"""The hang watchdog's settings (`pipeline.stages.<name>.watchdog`, launcher/config/schema.py Watchdog): checked
at plan time, and handed to the tasks in their payload. The watchdog itself runs on the node
(jobs/runtime/watchdog.py). Pure: plain config dicts in, errors or a payload part out."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from jobs.runtime.progress import WRITE_INTERVAL_S
from launcher import kinds
from launcher.errors import ConfigError


def check(name: str, st: Dict[str, Any], errors: List[ConfigError]) -> None:
    """Append a ConfigError per bad watchdog setting of stage `name` (`st`: its plain config): a kind
    without training progress (Kind.hang_watchdog), stall_s not above the progress write interval,
    startup_s not positive, restarts negative, a stop signal that is the stack-dump signal."""
    w, key = st["watchdog"], f"pipeline.stages.{name}.watchdog"

    def bad(k: str, msg: str) -> None:
        errors.append(ConfigError(msg, stage=name, key=f"{key}.{k}"))

    if w["stall_s"] is None:
        return
    kind = kinds.get(st["kind"]) if st["kind"] in kinds.names() else None
    if kind is not None and not kind.hang_watchdog:
        able = "/".join(k.name for k in kinds.all_kinds() if k.hang_watchdog)
        bad("stall_s", f"kind={st['kind']} writes no training progress for the watchdog to follow; only "
                       f"kind={able} stages have a hang watchdog (set it to null)")
        return
    if w["stall_s"] <= WRITE_INTERVAL_S:
        bad("stall_s", f"{w['stall_s']} s must be positive and longer than the progress file's write interval "
                       f"({WRITE_INTERVAL_S:g} s): a healthy task would look hung between two writes")
    if w["startup_s"] <= 0:
        bad("startup_s", f"must be positive (seconds before the first progress write), got {w['startup_s']}")
    if w["restarts"] < 0:
        bad("restarts", f"must be >= 0 (in-job restarts before the step is requeued), got {w['restarts']}")
    if str(st["requeue"]["signal"]).upper().removeprefix("SIG") == DUMP_SIGNAL:
        errors.append(ConfigError(
            f"SIG{DUMP_SIGNAL} is the signal the hang watchdog dumps the ranks' Python stacks with; choose another "
            f"stop signal (USR2, the default) or turn the watchdog off", stage=name, key=f"pipeline.stages.{name}.requeue.signal"))


# The signal each rank registers faulthandler on (jobs/runtime/stacks.py DUMP_SIGNAL says the same).
DUMP_SIGNAL = "USR1"


def payload(st: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The watchdog part of a task's payload, or None when it is off (then nothing is added, and the
    stage's hash stays what it was before the watchdog existed)."""
    w = st.get("watchdog") or {}
    return dict(w) if w.get("stall_s") is not None else None
