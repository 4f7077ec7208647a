"""The local scheduler's dependency semantics must match Slurm's (as measured on the dev cluster)."""
from pathlib import Path

import pytest

from launcher.local.driver import Driver, Job, Task, parse_dependency, sbatch_directives


def job(jid, states, deps=""):
    return Job(id=jid, script=Path("/dev/null"), deps=parse_dependency(deps),
               tasks={i: Task(state=s) for i, s in states.items()}, throttle=None, time_s=60, signal=12,
               signal_delay_s=10, output="", error="")


def verdict(parent_states, kind, idx=0, child_indices=(0,)):
    d = Driver.__new__(Driver)
    d.jobs = {"1": job("1", parent_states), "2": job("2", {i: "pending" for i in child_indices}, f"{kind}:1")}
    return d.dependency_verdict(idx, d.jobs["2"])


@pytest.mark.parametrize("kind,parents,expected", [
    ("afterok", {0: "completed", 1: "completed"}, "ok"),
    ("afterok", {0: "completed", 1: "running"}, "wait"),
    ("afterok", {0: "completed", 1: "failed"}, "never"),
    ("afterok", {0: "cancelled", 1: "running"}, "never"),
    ("afterany", {0: "failed", 1: "cancelled"}, "ok"),
    ("afterany", {0: "failed", 1: "pending"}, "wait"),
    ("afternotok", {0: "completed", 1: "failed"}, "ok"),
    ("afternotok", {0: "completed", 1: "completed"}, "never"),
    ("afternotok", {0: "failed", 1: "running"}, "wait"),
    ("aftercorr", {0: "completed", 1: "running"}, "ok"),  # task 0 waits only for parent task 0
    ("aftercorr", {0: "failed", 1: "completed"}, "never"),
])
def test_dependency_kinds(kind, parents, expected):
    assert verdict(parents, kind) == expected


def test_aftercorr_index_the_parent_lacks_waits_for_the_whole_parent():
    # measured on Slurm 22.05: such a task starts when the whole parent array ended OK, and is
    # cancelled if any parent task failed
    assert verdict({1: "completed", 3: "running"}, "aftercorr", idx=0, child_indices=(0, 1)) == "wait"
    assert verdict({1: "completed", 3: "completed"}, "aftercorr", idx=0) == "ok"
    assert verdict({1: "completed", 3: "failed"}, "aftercorr", idx=2) == "never"


def test_a_pending_task_records_why_it_waits_in_slurms_words(tmp_path):
    """Dependency (a parent not done), JobArrayTaskLimit (the array's %N), Resources (no free slot): what
    `launcher status` shows; the reason goes once the task starts, and state.json carries it."""
    d = Driver.__new__(Driver)
    d.dir, d.slots, d.dirty = tmp_path, 1, False
    d.jobs = {"1": job("1", {0: "running", 1: "pending"}), "2": job("2", {0: "pending"}, "afterok:1"),
              "3": job("3", {0: "pending"})}
    d.jobs["1"].throttle = 1
    d.schedule()
    assert [d.jobs[j].tasks[i].reason for j, i in (("1", 1), ("2", 0), ("3", 0))] == [
        "JobArrayTaskLimit", "Dependency", "Resources"]
    assert d.dirty
    d.save()
    import json

    state = json.loads((tmp_path / "state.json").read_text())
    assert state["2"]["0"] == {"state": "pending", "restarts": 0, "exit": None, "attempts": [], "reason": "Dependency"}
    assert "reason" not in state["1"]["0"]  # a running task waits for nothing


def test_parses_what_the_sbatch_script_says():
    d = sbatch_directives("#!/bin/bash\n#SBATCH --array=0-3%2\n#SBATCH --time=5\n#SBATCH --signal=USR2@30\n"
                          "#SBATCH --requeue\necho hi\n")
    assert d == {"array": "0-3%2", "time": "5", "signal": "USR2@30", "requeue": ""}
    assert parse_dependency("afterok:1:2,aftercorr:3,singleton") == [("afterok", ["1", "2"]), ("aftercorr", ["3"])]


# -- the pre-timeout signal (sbatch --signal) -----------------------------------------------------------
# Slurm's --signal without "B:" signals "all job steps ... but not the batch shell itself" (sbatch(1)), and
# the dev cluster's time-limit test requeues through it. The local scheduler runs each task as
# `bash <script>` whose last line starts `python -m jobs.task` (not exec'd): a signal to the whole process
# group killed the batch shell (bash has no USR2 trap: exit -12, the task FAILED instead of requeueing).
HANDLERS = {
    # a python task that handles the stop signal as jobs.task does: checkpoint, then exit REQUEUE_EXIT
    "python": "{py} -c 'import pathlib, signal, sys, time\n"
              "signal.signal(signal.SIGUSR2, lambda *a: sys.exit({rc}))\n"
              "pathlib.Path(\"{ready}\").touch()\ntime.sleep(60)'\n",
    # a shell child that traps the signal (a kind=command stage's command under its runner)
    "bash": "bash -c 'trap \"exit {rc}\" USR2; touch {ready}; for i in $(seq 600); do sleep 0.1; done'\n",
}


@pytest.mark.parametrize("child", sorted(HANDLERS))
def test_the_pre_timeout_signal_reaches_the_task_and_spares_the_batch_shell(tmp_path, child):
    import sys
    import time

    from jobs.task import REQUEUE_EXIT

    ready = tmp_path / "ready"
    script = tmp_path / "task.sbatch"
    script.write_text("#!/bin/bash\n#SBATCH --signal=USR2@60\n#SBATCH --time=1\necho started\n"
                      + HANDLERS[child].format(py=sys.executable, rc=REQUEUE_EXIT, ready=ready))
    d = Driver.__new__(Driver)
    d.dirty = False
    j = Job(id="1", script=script, deps=[], tasks={0: Task()}, throttle=None, time_s=60, signal=12,
            signal_delay_s=60, output=str(tmp_path / "out"), error=str(tmp_path / "err"))
    d.jobs = {"1": j}
    t = j.tasks[0]
    d.start(j, 0, t)
    deadline = time.time() + 30
    while not ready.exists():
        assert time.time() < deadline and t.proc.poll() is None, (tmp_path / "err").read_text()
        time.sleep(0.05)
    while t.proc is not None:  # the first round sends the pre-timeout signal (signal_delay_s = time)
        assert time.time() < deadline
        d.reap_and_enforce_limits(time.time())
        time.sleep(0.05)
    assert t.signalled and (t.exit, t.state, t.restarts) == (REQUEUE_EXIT, "pending", 1)


def test_a_cancelled_task_ends_when_its_processes_do_not_when_the_batch_shell_dies(tmp_path):
    """`launcher cancel` sends SIGTERM to the task's process group: the batch shell dies at once, while
    the task's process saves its checkpoint. The task is cancelled only once that process has ended
    (a Slurm job ends when its cgroup is empty); before, it was reported cancelled at once and a
    reader of the checkpoint raced the save (test_sigterm's local cancel failed on a loaded machine)."""
    import json
    import sys
    import time

    ready, saved = tmp_path / "ready", tmp_path / "saved"
    script = tmp_path / "task.sbatch"
    script.write_text(f"#!/bin/bash\n#SBATCH --time=1\n{sys.executable} -c 'import pathlib, signal, sys, time\n"
                      f"def stop(*a):\n    time.sleep(1.5)\n    pathlib.Path(\"{saved}\").touch()\n    sys.exit(0)\n"
                      f"signal.signal(signal.SIGTERM, stop)\npathlib.Path(\"{ready}\").touch()\ntime.sleep(60)'\n")
    d = Driver.__new__(Driver)
    d.dirty, d.dir = False, tmp_path
    j = Job(id="1", script=script, deps=[], tasks={0: Task()}, throttle=None, time_s=60, signal=12,
            signal_delay_s=10, output=str(tmp_path / "out"), error=str(tmp_path / "err"))
    d.jobs = {"1": j}
    t = j.tasks[0]
    d.start(j, 0, t)
    deadline = time.time() + 30
    while not ready.exists():
        assert time.time() < deadline, (tmp_path / "err").read_text()
        time.sleep(0.05)
    (tmp_path / "cancel").mkdir()
    (tmp_path / "cancel" / "c.json").write_text(json.dumps(["1"]))
    d.handle_cancels()
    while t.state != "cancelled":
        assert time.time() < deadline
        d.reap_and_enforce_limits(time.time())
        time.sleep(0.02)
    assert saved.exists()  # the task's process had finished saving when the task counted as cancelled
