"""Status from markers plus one scheduler answer (a fake scheduler: the edge cases of its answers)."""
from launcher.compose import compose
from launcher.plan import build_plan
from launcher.rundir import Run
from launcher.status import collect

from jobs import layout


class Answer:
    def __init__(self, states):
        self.states, self.queries = states, []

    lost_grace_s = 60.0

    def query(self, ids, settled=()):
        self.queries.append(sorted(ids))
        return self.states


def make_run(tmp_path):
    plan = build_plan([compose(["pipeline=smoke", "cluster=dev"])], [[]])
    layout.atomic_write_json(tmp_path / "plan.json", plan.to_json())
    run = Run(tmp_path)
    run.append_ledger({"job_id": "7", "stage": "shards", "chunk": 0, "offset": 0, "tasks": [0, 1, 2, 3], "batch": "s0"})
    return run, plan


def test_markers_decide_completed_and_one_query_covers_the_rest(tmp_path):
    run, plan = make_run(tmp_path)
    h = plan.stages["shards"].hash
    layout.atomic_write_json(layout.marker_path(tmp_path, "shards", h, 0), {})
    layout.marker_path(tmp_path, "shards", h, 1, "running-7_1").touch()  # accounting lags: sacct says pending
    layout.marker_path(tmp_path, "shards", h, 2, "running-6_2").touch()  # stale, from another job
    sched = Answer({"7": {0: "running", 1: "pending", 2: "pending", 3: "completed"}})
    st = collect(run, sched)
    assert st.stages["shards"].tasks == {0: "completed", 1: "running", 2: "pending", 3: "failed"}  # 3: no marker
    assert st.stages["reduce"].tasks == {0: "missing"}
    assert sched.queries == [["7"]] and st.exit_code == 2


def test_a_completed_run_asks_the_scheduler_nothing(tmp_path):
    run, plan = make_run(tmp_path)
    for name, s in plan.stages.items():
        for t in range(s.total_tasks):
            layout.atomic_write_json(layout.marker_path(tmp_path, name, s.hash, t), {})
    sched = Answer({})
    st = collect(run, sched)
    assert st.state == "COMPLETED" and st.exit_code == 0 and sched.queries == []
