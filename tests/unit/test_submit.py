"""All-or-nothing submission (a fake scheduler that fails on the Nth sbatch: an edge case mocks are for)."""
import pytest

from launcher.config.compose import compose
from launcher.errors import SubmissionError
from launcher.plan.model import build_plan
from launcher.plan.render import build_requests, write_stage_files
from launcher.run.rundir import Run
from launcher.run.submit import dependency_string, submit_all


class FlakyScheduler:
    def __init__(self, fail_at):
        self.fail_at, self.submitted, self.cancelled = fail_at, [], []

    def submit(self, script, dependency):
        if len(self.submitted) + 1 == self.fail_at:
            raise RuntimeError("sbatch: error: QOSMaxSubmitJobPerUserLimit")
        self.submitted.append((script, dependency))
        return str(100 + len(self.submitted))

    def cancel(self, ids):
        self.cancelled += list(ids)


def setup(tmp_path, *overrides, points=((),), chunk_size=1001):
    """(plan, run, requests) of the smoke pipeline, one point per override list in `points`."""
    plan = build_plan([compose(["pipeline=smoke", "cluster=dev", *overrides, *p]) for p in points],
                      [list(p) for p in points])
    run = Run(tmp_path)
    reqs = build_requests(plan, {s: range(p.total_tasks) for s, p in plan.stages.items()}, chunk_size)
    write_stage_files(plan, tmp_path, "RUN", reqs, "s0")
    return plan, run, reqs


def test_failure_midway_cancels_what_was_queued(tmp_path):
    plan, run, reqs = setup(tmp_path)
    sched = FlakyScheduler(fail_at=3)
    with pytest.raises(SubmissionError, match="stage 'fanout'.*QOSMaxSubmitJobPerUserLimit") as e:
        submit_all(run, plan, sched, reqs, batch="s0", echo=lambda *_: None)
    assert sched.cancelled == ["101", "102"] and "101, 102" in str(e.value)
    assert run.submissions() == []  # rolled-back jobs do not count as submitted
    assert any(r.get("rolled_back") == ["101", "102"] for r in run.ledger())


def test_dependencies_use_job_ids_of_this_batch_and_active_parents(tmp_path):
    plan, run, reqs = setup(tmp_path)
    sched = FlakyScheduler(fail_at=0)
    submit_all(run, plan, sched, reqs, batch="s0", echo=lambda *_: None)
    deps = [d for _, d in sched.submitted]
    assert deps == [None, "afterok:101", "afterany:102", "afterok:102"]
    reduce = next(r for r in reqs if r.stage == "reduce")
    assert dependency_string(reduce, plan, {}, {"shards": [("77", 0)]}) == "afterok:77"
    assert dependency_string(reduce, plan, {("shards", 0): "90"}, {"shards": [("77", 0)]}) == "afterok:90:77"


def test_singleton_stage(tmp_path):
    plan, run, reqs = setup(tmp_path, "pipeline.stages.reduce.singleton=true")
    reduce = next(r for r in reqs if r.stage == "reduce")
    assert dependency_string(reduce, plan, {("shards", 0): "5"}, {}) == "afterok:5,singleton"


class ConcurrentScheduler(FlakyScheduler):
    """Calls that take a while, several at once; `fail_chunk` fails the call of that array part."""
    concurrent_submits = 4

    def __init__(self, fail_script=None):
        import threading

        super().__init__(fail_at=0)
        self.fail_script, self.lock, self.in_flight, self.most = fail_script, threading.Lock(), 0, 0

    def submit(self, script, dependency):
        import time

        with self.lock:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
        time.sleep(0.05)
        with self.lock:
            self.in_flight -= 1
            if str(script) == self.fail_script:
                raise RuntimeError("sbatch: error: Batch job submission failed: Socket timed out")
            self.submitted.append((script, dependency))
            return str(100 + len(self.submitted))


def chunked(tmp_path):
    """The smoke pipeline at 3 points with MaxArraySize 2: shards (12 tasks) in 6 parts, reduce in 2."""
    return setup(tmp_path, points=[[f"pipeline.vars.scale={p}"] for p in (1, 2, 3)], chunk_size=2)


def test_a_stages_parts_go_at_once_and_each_is_recorded(tmp_path):
    plan, run, reqs = chunked(tmp_path)
    sched = ConcurrentScheduler()
    ids = submit_all(run, plan, sched, reqs, batch="s0", echo=lambda *_: None)
    assert sched.most > 1 and len(ids) == len(reqs) == len(run.submissions())
    shards = {r["job_id"] for r in run.submissions() if r["stage"] == "shards"}
    reduce = [d for s, d in sched.submitted if "reduce" in str(s)]
    assert reduce and all(set(d.split(":")[1:]) == shards for d in reduce)  # after every shards part


def test_a_failed_part_cancels_its_stages_other_parts_too(tmp_path):
    """The parts submitted beside the failed one are recorded, then cancelled with the earlier ones."""
    plan, run, reqs = chunked(tmp_path)
    shards = [r for r in reqs if r.stage == "shards"]
    sched = ConcurrentScheduler(fail_script=str(shards[1].script))
    with pytest.raises(SubmissionError, match=r"stage 'shards' \(chunk 1\).*Socket timed out"):
        submit_all(run, plan, sched, reqs, batch="s0", echo=lambda *_: None)
    queued = [r["job_id"] for r in run.ledger() if "job_id" in r]
    assert len(queued) == len(shards) - 1 and sorted(sched.cancelled) == sorted(queued)
    assert run.submissions() == [] and not any("reduce" in str(s) for s, _ in sched.submitted)


class InterruptedScheduler(ConcurrentScheduler):
    """Ctrl-C (SIGINT to this process) while the first `concurrent_submits` calls are under way, or
    (`early`) as soon as the first call starts: while the submitting thread is still starting the others."""

    def __init__(self, early=False):
        super().__init__()
        self.early, self.started = early, 0

    def submit(self, script, dependency):
        import os
        import signal
        import time

        with self.lock:
            self.started += 1
            first = self.started == 1
        if first:
            while not self.early and self.started < self.concurrent_submits:
                time.sleep(0.005)
            time.sleep(0 if self.early else 0.02)
            os.kill(os.getpid(), signal.SIGINT)
        return super().submit(script, dependency)


def test_an_interrupt_submits_no_part_not_started_and_records_the_ones_under_way(tmp_path):
    """As when the parts go one after another, Ctrl-C stops the submission: the calls under way (at
    most concurrent_submits) finish and their jobs are in the ledger; the parts waiting for a thread
    are not submitted after the interrupt. In a fresh interpreter: in CI's unit tier (twice, under
    pytest-xdist) the SIGINT sent to a worker that had run other tests never arrived, in every try."""
    import subprocess
    import sys
    from pathlib import Path

    here = Path(__file__).resolve().parent
    # SIGINT as in a shell: a handler that raises, not blocked (an ignored signal and the mask are inherited)
    program = "import sys, pathlib, signal; signal.signal(signal.SIGINT, signal.default_int_handler); " \
              "signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT}); sys.path.insert(0, sys.argv[1]); " \
              "import test_submit; test_submit.interrupt_scenario(pathlib.Path(sys.argv[2]))"
    p = subprocess.run([sys.executable, "-c", program, str(here), str(tmp_path)], capture_output=True, text=True,
                       cwd=here.parents[1], timeout=300, check=False)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]


def interrupt_scenario(tmp_path):
    """The interrupted submissions of the test above, in this process; raises AssertionError."""
    for early in (False, True):
        plan, run, reqs = chunked(tmp_path / str(early))
        sched = InterruptedScheduler(early)
        with pytest.raises(KeyboardInterrupt):
            submit_all(run, plan, sched, reqs, batch="s0", echo=lambda *_: None)
        assert sched.started <= sched.concurrent_submits < len([r for r in reqs if r.stage == "shards"])
        queued = sorted(str(101 + i) for i in range(len(sched.submitted)))
        assert queued and sorted(r["job_id"] for r in run.submissions()) == queued, early
