"""How often a watcher asks the scheduler: fast while states change, slower and slower while nothing
does, up to a ceiling; back to fast at the first change. Pure: the caller sleeps and asks.

submitit's watcher backs off the same way (submitit/slurm/slurm.py SlurmInfoWatcher: a delay that
grows from 2 s towards 10 min while a job is watched); site admins ask for it because every
`sacct`/`squeue` is an RPC to slurmdbd/slurmctld (slurm.conf(5): "a high rate of RPCs ... can
impact the performance of the controller")."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Generic, Optional, TypeVar

T = TypeVar("T")
MAX_S = 300.0  # ceiling: a watcher of a quiet run asks every 5 minutes
FACTOR = 1.5


@dataclass
class Backoff:
    """The interval (seconds) before the next scheduler query. `base_s`: after a change (and at the
    start); each unchanged answer multiplies it by `factor`, up to `max_s`. `fixed`: always base_s (a
    user's --interval)."""
    base_s: float
    max_s: float = MAX_S
    factor: float = FACTOR
    fixed: bool = False
    interval_s: float = field(init=False)
    _last: object = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.base_s <= 0 or self.max_s < self.base_s or self.factor < 1:
            raise ValueError(f"need 0 < base_s <= max_s and factor >= 1, got {self.base_s}, {self.max_s}, {self.factor}")
        self.interval_s = self.base_s

    def observe(self, fingerprint: object) -> float:
        """Record what the latest answer said (anything comparable: states and reasons); return the
        interval before the next query."""
        changed = fingerprint != self._last
        self._last = fingerprint
        if self.fixed or changed:
            self.interval_s = self.base_s
        else:
            self.interval_s = min(self.max_s, self.interval_s * self.factor)
        return self.interval_s


class Paced(Generic[T]):
    """A watcher's source of answers: `get(max_age_s)` is called with the backoff's current interval (a
    shared answer younger than that is reused: launcher/run/status_cache.py), and the backoff observes the
    answer's `fingerprint` when it changed or when a fresh answer was due (an answer reused from the
    cache says nothing new). What `status --watch`, `wait=true` and the dashboard each hold per run."""

    def __init__(self, get: Callable[[float], T], fingerprint: Callable[[T], object], backoff: Backoff,
                 clock: Optional[Callable[[], float]] = None):
        self._get, self._fingerprint, self.backoff = get, fingerprint, backoff
        self._clock = clock or (lambda: time.monotonic())  # looked up at each call (tests replace it)
        self._fp: object = None
        self._at = float("-inf")

    def __call__(self) -> T:
        answer = self._get(self.backoff.interval_s)
        fp, now = self._fingerprint(answer), self._clock()
        if fp != self._fp or now - self._at >= self.backoff.interval_s:
            self.backoff.observe(fp)
            self._fp, self._at = fp, now
        return answer
