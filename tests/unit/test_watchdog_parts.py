"""The hang watchdog's pieces: when a task counts as hung (jobs/runtime/watchdog.py verdict and its
thread), how the ranks' stacks are found and asked for (jobs/runtime/stacks.py, on real processes),
how torchrun is launched with it (jobs/adapters/torchrun.py), and the plan's checks of
`watchdog.*` (launcher/plan/watchdog.py)."""
import os
import signal
import subprocess
import sys
import time

import pytest

from jobs import layout
from jobs.adapters import torchrun
from jobs.runtime import stacks
from jobs.runtime.progress import ProgressWriter
from jobs.runtime.watchdog import Watchdog, verdict
from launcher.config.compose import compose
from launcher.errors import ConfigErrors
from launcher.plan.model import build_plan

pytestmark = pytest.mark.unit


# -- verdict -----------------------------------------------------------------------------------------
def test_before_the_first_write_of_the_attempt_the_startup_grace_counts():
    assert verdict(None, armed=100, now=150, stall_s=10, startup_s=60) is None
    assert "after the start of this attempt" in verdict(None, armed=100, now=161, stall_s=10, startup_s=60)
    # a record of an earlier attempt (before the arming) does not end the grace, nor count as a stall
    old = {"time": 90.0, "step": 7}
    assert verdict(old, armed=100, now=150, stall_s=10, startup_s=60) is None
    assert "startup_s=60" in verdict(old, armed=100, now=161, stall_s=10, startup_s=60)


def test_after_the_first_write_stall_s_counts_from_the_newest_record():
    rec = {"time": 200.0, "step": 4, "total_steps": 10}
    assert verdict(rec, armed=100, now=210, stall_s=10, startup_s=600) is None
    why = verdict(rec, armed=100, now=211, stall_s=10, startup_s=600)
    assert why == "no progress for 11 s at step 4 (watchdog.stall_s=10)"


def test_a_finished_training_is_not_judged_while_it_saves_and_shuts_down():
    assert verdict({"time": 200.0, "step": 10, "total_steps": 10}, 100, 900, 10, 60) is None


def test_an_unreadable_record_counts_as_none():
    assert verdict({"time": "soon"}, armed=100, now=150, stall_s=10, startup_s=60) is None
    assert verdict({"time": "soon"}, armed=100, now=161, stall_s=10, startup_s=60) is not None


def test_the_thread_calls_back_on_a_stall_and_rearms_after_an_in_job_restart(tmp_path):
    path = layout.progress_path(tmp_path, "train", 0)
    calls = []

    def on_stall(why):
        calls.append(why)
        return len(calls) < 2  # the first: restarted in the job (keep watching); the second: give up

    w = Watchdog(path, stall_s=0.4, startup_s=0.6, on_stall=on_stall, poll_s=0.05).start()
    writer = ProgressWriter(path, min_interval_s=0)
    for step in range(5):  # progress keeps it quiet
        writer.update(step=step, total_steps=100)
        time.sleep(0.1)
    assert calls == []
    deadline = time.time() + 5
    while len(calls) < 2 and time.time() < deadline:
        time.sleep(0.05)
    w.stop()
    assert "no progress for" in calls[0] and "stall_s=0.4" in calls[0]
    # re-armed: the old record no longer counts, the startup grace does
    assert "after the start of this attempt" in calls[1]
    time.sleep(0.8)
    assert len(calls) == 2  # on_stall said stop


# -- stacks ------------------------------------------------------------------------------------------
RANK = """import sys, time
from jobs.runtime.stacks import register_dump
register_dump()
def waiting_in_a_collective():
    print("ready", flush=True)
    time.sleep(60)
waiting_in_a_collective()
"""


def test_stacks_come_from_every_registered_process_of_the_tree_and_not_from_others(tmp_path):
    # a shell (no handler: SIGUSR1 would kill it) starting one rank that registered the dump
    log_file = tmp_path / "log"
    with open(log_file, "w") as out:
        tree = subprocess.Popen(["bash", "-c", f"{sys.executable} -c '{RANK}'; sleep 60"], stdout=out, stderr=out,
                                start_new_session=True)
    try:
        deadline = time.time() + 20
        while "ready" not in log_file.read_text() and time.time() < deadline:
            time.sleep(0.05)
        below = stacks.descendants(tree.pid)
        assert len(below) == 1 and stacks.catches(below[0]) and not stacks.catches(tree.pid)
        lines = []
        assert stacks.dump_tree(tree.pid, lines.append, wait_s=0.5) == below
        assert f"Python stacks of 1 process(es) {below}" in lines[0]
        text = log_file.read_text()
        assert "in waiting_in_a_collective" in text
        assert tree.poll() is None and stacks.catches(below[0])  # both still running
        stacks.kill_sessions(below)
        deadline = time.time() + 10
        while stacks.descendants(tree.pid) == below and time.time() < deadline:
            time.sleep(0.05)
        assert below[0] not in stacks.descendants(tree.pid)  # the rank is gone, the shell goes on
    finally:
        stacks.kill_sessions([tree.pid])
        tree.wait(timeout=20)


def test_a_tree_without_registered_ranks_is_left_alone():
    p = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        lines = []
        assert stacks.dump_tree(p.pid, lines.append) == []
        assert "no stacks" in lines[0] and p.poll() is None
    finally:
        p.kill()
        p.wait()


def test_catches_reads_the_handler_mask_of_this_process():
    old = signal.signal(signal.SIGUSR1, lambda *_: None)
    try:
        assert stacks.catches(os.getpid(), signal.SIGUSR1)
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert not stacks.catches(999999999)


# -- torchrun ----------------------------------------------------------------------------------------
class Handle:
    def __init__(self, payload):
        self.payload = payload


def test_without_a_watchdog_torchrun_restarts_nothing_and_the_target_is_unchanged():
    task = Handle({})
    assert torchrun.watched(task, ["train.py", "--x"]) == (["train.py", "--x"], 0)
    argv = torchrun.torchrun_argv("py", ["h"], 2, "1", 20000, ["train.py"])
    assert "--max-restarts=0" in argv


def test_with_a_watchdog_ranks_start_through_rankmain_and_torchrun_restarts():
    task = Handle({"watchdog": {"stall_s": 60, "startup_s": 600, "restarts": 2}})
    target, restarts = torchrun.watched(task, ["-m", "pkg.train", "--x"])
    assert target == ["-m", "jobs.runtime.rankmain", "-m", "pkg.train", "--x"] and restarts == 2
    assert task.in_job_restarts == 2
    assert torchrun.watched(task, ["--no-python", "prog"]) == (["--no-python", "prog"], 2)
    argv = torchrun.torchrun_argv("py", ["h"], 2, "1", 20000, target, max_restarts=restarts)
    assert "--max-restarts=2" in argv and argv[-5:] == target


# -- plan checks --------------------------------------------------------------------------------------
P = "pipeline.stages.probe"


def errors_of(*overrides):
    with pytest.raises(ConfigErrors) as e:
        build_plan([compose(["pipeline=distributed", "cluster=local", *overrides])], [[]])
    return {x.key: x.message for x in e.value.errors}


@pytest.mark.parametrize("override,key,message", [
    (f"{P}.watchdog.stall_s=5", f"{P}.watchdog.stall_s", "longer than the progress file's write interval (5 s)"),
    (f"{P}.watchdog.stall_s=-1", f"{P}.watchdog.stall_s", "must be positive"),
    (f"{P}.watchdog.startup_s=0", f"{P}.watchdog.startup_s", "must be positive"),
    (f"{P}.watchdog.restarts=-1", f"{P}.watchdog.restarts", "must be >= 0"),
    (f"{P}.requeue.signal=USR1", f"{P}.requeue.signal", "SIGUSR1 is the signal the hang watchdog dumps"),
])
def test_bad_watchdog_settings_name_the_stage_and_key(override, key, message):
    overrides = [f"{P}.watchdog.stall_s=60", override] if "stall_s" not in override else [override]
    errs = errors_of(*overrides)
    assert key in errs and message in errs[key], errs


def test_a_kind_without_training_progress_cannot_have_a_watchdog():
    with pytest.raises(ConfigErrors) as e:
        build_plan([compose(["pipeline=smoke", "cluster=local", "pipeline.stages.fanout.watchdog.stall_s=60"])], [[]])
    (err,) = e.value.errors
    assert err.key == "pipeline.stages.fanout.watchdog.stall_s" and "kind=command writes no training progress" in err.message
    assert "pretrain" in err.message and "torchrun" in err.message and "align" in err.message


def test_the_watchdog_reaches_the_payload_only_when_on_so_other_hashes_stay():
    off = build_plan([compose(["pipeline=distributed", "cluster=local"])], [[]]).stages["probe"]
    on = build_plan([compose(["pipeline=distributed", "cluster=local", f"{P}.watchdog.stall_s=60"])], [[]]).stages["probe"]
    assert "watchdog" not in off.payloads[0]
    assert on.payloads[0]["watchdog"] == {"stall_s": 60.0, "startup_s": 600.0, "restarts": 1}
    assert on.hash != off.hash


# -- the task's reaction (jobs/guards.py) -------------------------------------------------------------
IN_PROCESS = """import sys, threading, time
from pathlib import Path
from jobs.context import TaskContext
from jobs.task import Task
run = Path(sys.argv[1])
t = Task.__new__(Task)
t.run_dir, t.stage, t.task, t.rank, t.restarts, t.job_id, t.terminated = run, "train", 0, 0, 0, "local_1", False
t.child = None
t.spec = {"backend": "local", "requeue": {"max": 3}}
t.tmp_out = run / "partial"
t.ctx = TaskContext(run_dir=run, run_id="r", stage="train", task=0, index=0, num_tasks=1, point=0, params={},
                    output_dir=t.tmp_out, checkpoint_dir=run / "ckpt", inputs={}, restart_count=0)
def stuck_in_training():
    threading.Timer(0.5, t._on_stall, args=("no progress for 9 s",)).start()
    time.sleep(30)
stuck_in_training()
"""


def test_work_in_the_task_process_dumps_its_own_stacks_and_requeues(tmp_path):
    """The hf backend trains in jobs.task itself: the watchdog thread prints the stuck main thread's
    stack and ends the process with the requeue exit (75 on the local backend)."""
    p = subprocess.run([sys.executable, "-c", IN_PROCESS, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 75, p.stderr[-3000:]
    assert "watchdog: no progress for 9 s" in p.stderr and "in stuck_in_training" in p.stderr, p.stderr[-3000:]
    assert "requeue 1/3 (local scheduler)" in p.stderr
