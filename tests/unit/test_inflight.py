"""Two runs at once (launcher/run/inflight.py, cache.py, cache_lock.py): a point another run is computing
is referenced and waited on, not computed again; when its jobs fail, resume computes it. The other
run is a run directory on disk with a ledger and a fake local-scheduler state (state.json, a live
driver pid), so the scheduler's answer is what the test writes."""
import json
import os
import subprocess
import sys
import time

import pytest

from jobs import layout
from launcher.run import cache, cache_lock, inflight
from launcher.errors import LauncherError
from launcher.local.driver import Driver, Job, Task
from launcher.run.submit import dependency_string
from tests.unit.test_cache import keyed, old_run


def computing(root, plan, states, done=None, name="20260101-000000-smoke-a"):
    """A run of `plan` whose stages are each one local job (ids 1, 2, ... in plan order) in `states`
    ({stage: state of its tasks}; absent: never submitted), with markers for `done` ({stage: tasks})."""
    run = old_run(root, plan, name=name, done=done or {})
    (run / "local").mkdir()
    (run / "local" / "driver.pid").write_text(f"{os.getpid()}\n")  # a driver that is alive
    state = {}
    with open(run / "submissions.jsonl", "w") as f:
        for jid, (stage, s) in enumerate(plan.stages.items(), 1):
            if stage in states:
                f.write(json.dumps({"job_id": str(jid), "stage": stage, "chunk": 0, "offset": 0,
                                    "tasks": list(range(s.total_tasks))}) + "\n")
                state[str(jid)] = {str(i): {"state": states[stage], "restarts": 0, "exit": None}
                                   for i in range(s.total_tasks)}
    layout.atomic_write_json(run / "local" / "state.json", state)
    return run


def set_state(run, job, state):
    path = run / "local" / "state.json"
    data = json.loads(path.read_text())
    for t in data[job].values():
        t["state"] = state
    layout.atomic_write_json(path, data)


def test_a_point_being_computed_is_referenced_and_its_consumers_wait_on_its_jobs(tmp_path):
    run = computing(tmp_path, keyed(tmp_path), {"shards": "running", "reduce": "pending"})
    plan = keyed(tmp_path, "+pipeline.stages.checkpointing.env.X=a")  # checkpointing: another key
    cache.apply(plan, tmp_path)
    assert plan.stages["shards"].cached["0"]["jobs"] == {"1": [0, 1, 2, 3]}
    assert plan.stages["reduce"].cached["0"]["jobs"] == {"2": [0]}
    assert not plan.stages["fanout"].cached and not plan.stages["checkpointing"].cached  # never submitted there
    # reduce runs nothing here, so its consumers wait on its job and, through it, on shards'
    assert plan.stages["checkpointing"].inflight == {f"{run}#1": "afterok", f"{run}#2": "afterok"}
    assert plan.stages["fanout"].inflight == {f"{run}#1": "afterany", f"{run}#2": "afterany"}  # its edge's kind
    assert plan.stages["shards"].inflight == {} and plan.stages["shards"].run_tasks() == []
    req = type("R", (), {"stage": "checkpointing", "deps": []})()
    assert dependency_string(req, plan, {}, {}) == f"afterok:{run}#1:{run}#2"


@pytest.mark.parametrize("state", ["failed", "cancelled", "completed"])  # completed without markers: failed
def test_a_point_whose_jobs_ended_without_markers_is_computed_again(tmp_path, state):
    computing(tmp_path, keyed(tmp_path), {"shards": state})
    plan = keyed(tmp_path)
    cache.apply(plan, tmp_path)
    assert not plan.stages["shards"].cached and plan.stages["shards"].run_tasks() == [0, 1, 2, 3]


def test_a_completed_source_wins_over_one_in_flight_and_another_cluster_is_not_waited_on(tmp_path):
    computing(tmp_path, keyed(tmp_path), {"shards": "running"}, name="20260101-000000-smoke-a")
    done = old_run(tmp_path, keyed(tmp_path), name="20260102-000000-smoke-b", done={"shards": range(4)})
    plan = keyed(tmp_path)
    cache.apply(plan, tmp_path)
    assert plan.stages["shards"].cached["0"]["run"] == str(done) and "jobs" not in plan.stages["shards"].cached["0"]
    other = keyed(tmp_path, "pipeline.stages.reduce.cache=false")
    other.cluster = dict(other.cluster, name="elsewhere")  # the running run's jobs are on `local`
    cache.apply(other, tmp_path)
    assert not other.stages["reduce"].cached


def test_status_and_resume_follow_the_source_settle(tmp_path):
    run = computing(tmp_path, keyed(tmp_path), {"shards": "running", "reduce": "pending"})
    plan = keyed(tmp_path, "+pipeline.stages.checkpointing.env.X=a")
    cache.apply(plan, tmp_path)
    assert inflight.source_state(plan.cluster, "shards", plan.stages["shards"].cached["0"]) == "running"
    assert inflight.source_state(plan.cluster, "reduce", plan.stages["reduce"].cached["0"]) == "pending"
    for t in range(4):  # shards completes there; reduce's job fails
        layout.atomic_write_json(layout.marker_path(run, "shards", plan.stages["shards"].hash, t), {})
    set_state(run, "1", "completed")
    set_state(run, "2", "failed")
    assert inflight.source_state(plan.cluster, "reduce", plan.stages["reduce"].cached["0"]) == "failed"
    assert inflight.settle(plan) == {("reduce", 0)}
    assert plan.stages["shards"].cached["0"].keys() == {"run", "point", "hash", "tasks"}  # a plain cached one now
    assert not plan.stages["reduce"].cached and plan.stages["reduce"].run_tasks() == [0]
    assert plan.stages["checkpointing"].inflight == {} and plan.stages["reduce"].inflight == {}  # nothing in flight


def test_the_local_driver_waits_on_another_runs_job(tmp_path):
    run = computing(tmp_path, keyed(tmp_path), {"shards": "running"})
    driver = Driver(tmp_path / "mine", 1)
    job = Job(id="1", script=tmp_path / "x.sh", deps=[("afterok", [f"{run}#1"])], tasks={0: Task()}, throttle=None,
              time_s=60, signal=12, signal_delay_s=1, output="/dev/null", error="/dev/null")
    driver.jobs["1"] = job
    assert driver.dependency_verdict(0, job) == "wait"
    set_state(run, "1", "completed")
    assert driver.dependency_verdict(0, job) == "ok"
    set_state(run, "1", "failed")
    assert driver.dependency_verdict(0, job) == "never"
    job.deps = [("afterok", [f"{run}#99"])]  # a job that run never had: never, as sbatch would refuse it
    assert driver.dependency_verdict(0, job) == "never"


def test_the_cache_lock_times_out_naming_its_holder(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, '.'); from launcher.run import cache_lock; from pathlib import Path\n"
        f"with cache_lock.held([Path({str(tmp_path)!r})]):\n    print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        start = time.monotonic()
        with pytest.raises(LauncherError) as e:
            with cache_lock.held([tmp_path], timeout_s=0.5):
                pass
        assert time.monotonic() - start < 5
        assert f"pid {holder.pid}" in str(e.value) and cache_lock.LOCK_NAME in str(e.value)
    finally:
        holder.kill()
        holder.wait()
    with cache_lock.held([tmp_path, tmp_path / "."], timeout_s=5):  # the holder died: free; one dir taken once
        pass


def test_one_scheduler_query_for_every_candidate_where_one_scheduler_holds_all_runs(monkeypatch):
    from launcher import backends

    calls = []

    class OneScheduler:
        accounting_spans_runs = True

        def __init__(self, cluster, run_dir, accounting=None):
            pass

        def query(self, ids, settled=()):
            calls.append(list(ids))
            return {"7": {0: "running", 1: "pending"}, "8": {0: "failed"}}

    monkeypatch.setattr(backends, "get", lambda name: OneScheduler)
    monkeypatch.setattr(backends, "for_cluster", lambda cluster, run_dir, accounting=None: OneScheduler(cluster, run_dir))
    wanted = [("/runs/a", {"7": [0, 1]}), ("/runs/b", {"8": [0]}), ("/runs/c", {"9": [0]})]
    assert inflight.alive({"backend": "x"}, wanted) == [True, False, False]  # 9: unknown to it
    assert calls == [["7", "8", "9"]]
