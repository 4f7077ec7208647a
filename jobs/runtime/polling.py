"""Poll until a deadline: the one loop behind every "wait for X, at most T seconds" of the node side.
Standard library only."""
from __future__ import annotations

import time
from typing import Callable, Optional, TypeVar

T = TypeVar("T")


def until(check: Callable[[], Optional[T]], timeout: Optional[float], interval: float, *,
          clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> Optional[T]:
    """Call check() every `interval` seconds until it returns something truthy, and return that; return
    None once `timeout` seconds have passed since the call (None: no deadline) without it. check() runs
    at least once, and once more at the deadline (the last sleep is cut to end there). An exception
    check() raises ends the wait and propagates: that is how a check says "this will never happen"."""
    deadline = None if timeout is None else clock() + max(0.0, float(timeout))
    while True:
        got = check()
        if got:
            return got
        now = clock()
        if deadline is not None and now >= deadline:
            return None
        sleep(interval if deadline is None else min(interval, deadline - now))
