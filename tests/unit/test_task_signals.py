"""jobs.task after a SIGTERM it did not ask for: what the runner decides from its job's state, and
what it does to the work. The Slurm answers are canned (`scontrol -o show job` as measured on the
dev cluster's Slurm 22.05); the end-to-end cases run a real task process that gets a real SIGTERM."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobs import layout
from jobs import task as jobs_task
from jobs.task import REQUEUE_EXIT, Task

ROOT = Path(__file__).resolve().parents[2]
SHOW_JOB = ("JobId={id} ArrayJobId=41 ArrayTaskId=0 JobName=run.stage UserId=root(0) Priority=1 "
            "JobState={state} Reason=None Dependency=(null) Requeue=1 Restarts={restarts} BatchFlag=1 ExitCode=0:0\n")


def spec(tmp_path: Path, backend: str = "slurm", kind: str = "python", **payload) -> dict:
    return {"run_dir": str(tmp_path / "run"), "run_id": "r", "stage": "s", "hash": "h", "kind": kind,
            "tasks_per_point": 1, "points": 1, "payloads": [payload], "parents": [], "backend": backend,
            "requeue": {"max": 3, "signal": "USR2", "signal_delay_s": 30, "term_grace_s": 5}}


@pytest.fixture
def slurm_env(monkeypatch):
    for k in ("SLURM_RESTART_COUNT", "LAUNCHER_RESTART_COUNT", "SLURM_PROCID", "LAUNCHER_TASK_OFFSET"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "41")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "0")
    monkeypatch.setenv("SLURM_JOB_ID", "42")


class FakeSlurm:
    """Stands in for subprocess.run in jobs.task: answers `scontrol show job`, records every call."""

    def __init__(self, state="RUNNING", restarts=0, rc=0, banner=""):
        self.state, self.restarts, self.rc, self.banner, self.calls = state, restarts, rc, banner, []

    def __call__(self, argv, **kw):
        self.calls.append(argv)
        out = ""
        if argv[:4] == ["scontrol", "-o", "show", "job"]:
            out = self.banner + SHOW_JOB.format(id=argv[4], state=self.state, restarts=self.restarts)
        return subprocess.CompletedProcess(argv, self.rc if "show" in argv else 0, out, "error" if self.rc else "")

    @property
    def requeues(self):
        return [c for c in self.calls if c[:2] == ["scontrol", "requeue"]]


def terminated_task(tmp_path, monkeypatch, fake, backend="slurm") -> Task:
    monkeypatch.setattr(jobs_task.subprocess, "run", fake)
    t = Task(spec(tmp_path, backend))
    t.terminated = True
    return t


@pytest.mark.parametrize("state,restarts,said", [
    ("COMPLETING", 1, "Slurm is requeueing this task (job COMPLETING, restart 1)"),  # scontrol requeue
    ("COMPLETING", 0, "Slurm is ending this task (job COMPLETING"),  # scancel: requeueing it would undo it
    ("CANCELLED", 0, "Slurm is ending this task (job CANCELLED"),
])
def test_a_job_slurm_is_ending_is_left_to_slurm(tmp_path, monkeypatch, slurm_env, capsys, state, restarts, said):
    fake = FakeSlurm(state, restarts)
    t = terminated_task(tmp_path, monkeypatch, fake)
    assert t.requeue() == 128 + signal.SIGTERM
    assert fake.calls == [["scontrol", "-o", "show", "job", "41_0"]] and not fake.requeues
    err = capsys.readouterr().err
    assert said in err and "cancelled" not in err
    assert not layout.marker_path(t.run_dir, "s", "h", 0, "failed").exists()


def test_a_job_still_running_after_sigterm_requeues_itself(tmp_path, monkeypatch, slurm_env, capsys):
    """A preemption with GraceTime (or a plain kill): exiting would be recorded FAILED, not requeued."""
    fake = FakeSlurm("RUNNING", banner="Site notice: maintenance on Friday\n")
    t = terminated_task(tmp_path, monkeypatch, fake)
    assert t.requeue() == REQUEUE_EXIT
    assert fake.requeues == [["scontrol", "requeue", "41_0"]]
    assert t.ending  # the SIGTERM that requeue brings is now expected
    assert "still RUNNING after SIGTERM (a preemption" in capsys.readouterr().err


def test_the_self_requeue_after_sigterm_counts_against_requeue_max(tmp_path, monkeypatch, slurm_env):
    monkeypatch.setenv("SLURM_RESTART_COUNT", "3")
    fake = FakeSlurm("RUNNING", restarts=3)
    t = terminated_task(tmp_path, monkeypatch, fake)
    assert t.requeue() == 1 and not fake.requeues
    failure = json.loads(layout.marker_path(t.run_dir, "s", "h", 0, "failed").read_text())
    assert "requeue.max=3" in failure["error"]


def test_no_answer_from_slurm_means_no_requeue(tmp_path, monkeypatch, slurm_env, capsys):
    fake = FakeSlurm(rc=1)
    t = terminated_task(tmp_path, monkeypatch, fake)
    assert t.requeue() == 128 + signal.SIGTERM and not fake.requeues
    assert "could not read the state of job 41_0" in capsys.readouterr().err


def test_other_ranks_never_ask_slurm_and_exit_zero(tmp_path, monkeypatch, slurm_env):
    """Rank 0's runner decides for a multi-node task; an exit code != 0 here would make
    `srun --kill-on-bad-exit` end the step before rank 0 has requeued it."""
    monkeypatch.setenv("SLURM_PROCID", "1")
    fake = FakeSlurm("RUNNING")
    t = terminated_task(tmp_path, monkeypatch, fake)
    assert t.requeue() == 0 and fake.calls == []
    t.terminated = False  # the stop signal path: the same
    assert t.requeue() == 0 and fake.calls == []


def test_local_backend_leaves_the_outcome_to_the_local_scheduler(tmp_path, monkeypatch, slurm_env):
    fake = FakeSlurm("RUNNING")
    t = terminated_task(tmp_path, monkeypatch, fake, backend="local")
    assert t.requeue() == 128 + signal.SIGTERM and fake.calls == []


def test_sigterm_forwards_to_the_command_and_the_expected_one_does_not(tmp_path, slurm_env, capsys):
    t = Task(spec(tmp_path, kind="command", command="sleep 30"))
    t.child = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        t.ending = True  # our own requeue's SIGTERM: nothing to do
        t._on_sigterm(signal.SIGTERM, None)
        assert not t.terminated and not t.ctx.should_stop() and t.child.poll() is None
        t.ending = False
        t._on_sigterm(signal.SIGTERM, None)
        assert t.terminated and t.ctx.should_stop()
        assert t.child.wait(timeout=5) == -signal.SIGTERM
        assert "checkpointing within 5 s, no completion marker" in capsys.readouterr().err
    finally:
        t._cancel_deadlines()
        if t.child.poll() is None:
            t.child.kill()


def test_sigterm_after_the_stop_signal_does_not_interrupt_the_save(tmp_path, slurm_env, capsys):
    """The command already got USR2 and is saving: a SIGTERM now would kill its trap mid-save."""
    t = Task(spec(tmp_path, kind="command", command="sleep 30"))
    t.child = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        t.ctx.stop_requested.set()
        t._on_sigterm(signal.SIGTERM, None)
        assert t.terminated and t.child.poll() is None
        assert "already checkpointing after the stop signal" in capsys.readouterr().err
    finally:
        t._cancel_deadlines()
        t.child.kill()


# -- a real task process ------------------------------------------------------------------------
WORK = '''
import os, signal, time

def saves(ctx):
    """Checkpoints and requeues when asked."""
    os.kill(os.getpid(), signal.SIGTERM)
    while not ctx.should_stop():
        time.sleep(0.01)
    (ctx.checkpoint_dir / "saved").write_text("yes")
    ctx.requeue()

def finishes(ctx):
    """Ignores the request and returns normally: its output must not count as complete."""
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.2)
    (ctx.output_dir / "out.txt").write_text("done")

def ignores(ctx):
    """Never stops: ended after term_grace_s."""
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(60)
'''


def run_task(tmp_path, target: str, grace: int = 5) -> tuple[subprocess.CompletedProcess, Path, float]:
    (tmp_path / "mod").mkdir(exist_ok=True)
    (tmp_path / "mod" / "sigwork.py").write_text(WORK)
    s = spec(tmp_path, "local", target=f"sigwork:{target}")
    s["requeue"]["term_grace_s"] = grace
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(s))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "LAUNCHER_"))}
    env.update(PYTHONPATH=f"{ROOT}:{tmp_path / 'mod'}", LAUNCHER_ARRAY_TASK_ID="0", LAUNCHER_JOB_ID="7_0")
    t0 = time.time()
    p = subprocess.run([sys.executable, "-m", "jobs.task", str(path)], env=env, capture_output=True, text=True,
                       timeout=60)
    return p, Path(s["run_dir"]), time.time() - t0


@pytest.mark.parametrize("target", ["saves", "finishes", "ignores"])
def test_work_ended_by_sigterm_never_writes_a_marker(tmp_path, target):
    p, run_dir, took = run_task(tmp_path, target, grace=2)
    assert p.returncode == 128 + signal.SIGTERM, p.stderr
    markers = layout.markers_dir(run_dir, "s", "h")
    assert not list(markers.glob("0.done")) and not list(markers.glob("0.failed")), list(markers.iterdir())
    assert not layout.output_dir(run_dir, "s", 0, 0).exists()
    assert "SIGTERM without the stop signal: the local scheduler is ending this task" in p.stderr
    if target == "saves":
        assert (layout.checkpoint_dir(run_dir, "s", 0) / "saved").read_text() == "yes" and took < 10
    if target == "finishes":
        assert "returned after SIGTERM: no completion marker" in p.stderr
    if target == "ignores":
        assert "did not stop within 2 s" in p.stderr and took < 15
