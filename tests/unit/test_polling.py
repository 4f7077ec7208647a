"""Watchers that a site admin accepts (issue 21 item 4): the interval between scheduler queries grows
while nothing changes and drops back at a change (launcher/run/backoff.py); watchers of one run share one
answer per interval (launcher/run/status_cache.py); `--interval` fixes it. (A clock of the test's own
replaces time; the real scheduler: the integration tests that wait on runs.)"""
import json

import pytest

from launcher.run import status_cache
from launcher.answer import Answer
from launcher.run.backoff import Backoff
from launcher.reports import display
from launcher.run.status import RunStatus, StageStatus


def test_the_interval_grows_while_nothing_changes_and_drops_at_a_change():
    b = Backoff(10.0, max_s=60.0, factor=2.0)
    assert [b.observe("a") for _ in range(5)] == [10.0, 20.0, 40.0, 60.0, 60.0]  # the first answer is a change
    assert b.observe("b") == 10.0 and b.observe("b") == 20.0
    fixed = Backoff(5.0, fixed=True)
    assert {fixed.observe("same") for _ in range(10)} == {5.0}
    with pytest.raises(ValueError):
        Backoff(0.0)


class Counting:
    """A backend of the test: counts the queries that reach it."""
    lost_grace_s = 0.0

    def __init__(self):
        self.calls = []

    def query(self, job_ids, settled=()):
        self.calls.append(sorted(job_ids))
        return Answer({j: {0: "running"} for j in job_ids}, reasons={j: {1: "Priority"} for j in job_ids},
                      restarts={j: {0: 1} for j in job_ids})


def test_watchers_of_one_run_share_an_answer_younger_than_their_interval(tmp_path):
    backend = Counting()
    first, second = status_cache.SharedQueries(backend, tmp_path, 30), status_cache.SharedQueries(backend, tmp_path, 30)
    a = first.query(["7", "8"])
    b = second.query(["8", "7"])  # another watcher, the same jobs: read from the cache
    assert len(backend.calls) == 1 and (first.asked, second.asked) == (1, 0)
    assert b == a == {"7": {0: "running"}, "8": {0: "running"}} and b.reasons == {"7": {1: "Priority"}, "8": {1: "Priority"}}
    assert b.restart_count("7", 0) == 1 and first.lost_grace_s == 0.0  # the rest is the wrapped backend's
    second.query(["7"])  # other jobs: asked
    second.query(["7"], settled=["7"])  # the same jobs, now old enough to be lost when unknown: asked
    assert len(backend.calls) == 3


def test_an_old_or_torn_answer_is_asked_again(tmp_path):
    backend = Counting()
    shared = status_cache.SharedQueries(backend, tmp_path, 30)
    shared.query(["7"])
    path = tmp_path / status_cache.NAME
    rec = json.loads(path.read_text())
    path.write_text(json.dumps(dict(rec, time=rec["time"] - 31)))
    shared.query(["7"])
    path.write_text('{"time": ')
    shared.query(["7"])
    assert len(backend.calls) == 3 and json.loads(path.read_text())["jobs"] == ["7"]


class Clock:
    def __init__(self):
        self.now = 0.0

    def sleep(self, s):
        self.now += s

    def monotonic(self):
        return self.now


def _status(done: int) -> RunStatus:
    tasks = {t: "completed" if t < done else "running" for t in range(4)}
    return RunStatus(run="r", stages={"train": StageStatus(name="train", total=4, tasks=tasks, job_ids=["7"])})


def test_a_quiet_run_is_asked_less_and_less_often_and_a_change_resets_it(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(display.time, "sleep", clock.sleep)
    monkeypatch.setattr(display.time, "monotonic", clock.monotonic)
    asked, cache = [], {"at": None}

    def get_status(max_age_s):
        # the shared cache's rule: ask when the last answer is max_age_s old or older
        if cache["at"] is None or clock.now - cache["at"] >= max_age_s:
            cache["at"] = clock.now
            asked.append(clock.now)
        done = 1 if clock.now < 600 else 2 if clock.now < 1800 else 4  # one change at ~600 s, the end at ~1800 s
        return _status(done)

    st = display.watch(get_status, Backoff(10.0, max_s=300.0, factor=1.5), tick_s=10.0)
    assert st.state == "COMPLETED"
    gaps = [b - a for a, b in zip(asked, asked[1:])]
    assert len(asked) < 30, asked  # fixed 10 s polling would have asked ~180 times in 1,800 s
    assert gaps[:3] == [10.0, 20.0, 30.0] and max(gaps) <= 300.0 + 10.0, gaps
    after_change = next(i for i, t in enumerate(asked) if t >= 600)
    assert gaps[after_change] <= 20.0, (asked, gaps)  # back to fast after the change


def test_interval_must_be_positive_seconds(capsys):
    from launcher.cli import main

    with pytest.raises(SystemExit) as e:
        main(["status", "latest", "--watch", "--interval", "0"])
    assert e.value.code == 64 and "expected seconds > 0, not '0'" in capsys.readouterr().err
