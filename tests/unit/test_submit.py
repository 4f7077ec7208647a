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


def setup(tmp_path, *overrides):
    plan = build_plan([compose(["pipeline=smoke", "cluster=dev", *overrides])], [[]])
    run = Run(tmp_path)
    reqs = build_requests(plan, {s: range(p.total_tasks) for s, p in plan.stages.items()}, 1001)
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
