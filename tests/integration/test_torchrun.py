"""jobs.adapters.torchrun for real: torchrun with 2 CPU processes (gloo) in the cpu stage environment, on a fake
one-node Slurm allocation (SLURM_* variables and an `scontrol` on PATH). The Slurm-level test (srun on
the dev cluster) belongs with kind=torchrun."""
import json
import os
import signal
import socket
import stat
import threading
import time
from pathlib import Path

import pytest

from jobs.adapters import torchrun as launch
from jobs.context import Requeue, TaskContext
from jobs.task import Task

ROOT = Path(__file__).resolve().parent.parent.parent
PROBE = str(ROOT / "jobs" / "demo" / "dist_probe.py")
HOST = socket.gethostname()


class StandIn(Task):
    """A jobs.task.Task as launch() uses it (.spec, .environment(), .run_child(); .child is the torchrun it
    started) on a fake allocation: no spec file, the environment given."""

    def __init__(self, tmp_path: Path, env: dict):
        out = tmp_path / "out"
        out.mkdir()
        self.ctx = TaskContext(run_dir=tmp_path, run_id="r", stage="train", task=0, index=0, num_tasks=1, point=0,
                               params={}, output_dir=out, checkpoint_dir=tmp_path / "ckpt", inputs={},
                               restart_count=0)
        self.spec = {"backend": "slurm", "requeue": {"max": 1, "signal": "USR2", "signal_delay_s": 30}}
        self.child, self.stop_file, self.terminated = None, None, False
        self._env = env

    def environment(self) -> dict:
        return {**self._env, "LAUNCHER_OUTPUT_DIR": str(self.ctx.output_dir), "LAUNCHER_STOP_SIGNAL": "USR2"}


@pytest.fixture
def fake_slurm(tmp_path):
    """A one-node allocation on this machine: what srun sets for a jobs.task process, and an scontrol
    that expands the node list."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"
    scontrol.write_text('#!/bin/sh\n[ "$1 $2" = "show hostnames" ] && [ -n "$3" ] && echo "$3" && exit 0\n'
                        'echo "fake scontrol: $*" >&2; exit 1\n')
    scontrol.chmod(scontrol.stat().st_mode | stat.S_IXUSR)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "LAUNCHER_", "PROBE_", "MASTER_"))}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", SLURM_JOB_NODELIST=HOST, SLURM_NNODES="1", SLURM_NODEID="0",
               SLURM_PROCID="0", SLURM_NTASKS="1")
    return env


def run(task, cpu_python, job_id: str, on_line=None, **probe_env):
    task._env.update(SLURM_JOB_ID=job_id)
    t0 = time.perf_counter()
    try:
        launch.launch(task, [PROBE], nproc_per_node=2, port_base=20000, extra_env=probe_env, python=str(cpu_python),
                      on_line=on_line)
    finally:
        elapsed = time.perf_counter() - t0
    return elapsed


def ranks(out: Path) -> list:
    return [json.loads(p.read_text()) for p in sorted(out.glob("rank-*.json")) if "stopped" not in p.name]


def test_two_ranks_meet_and_all_reduce(tmp_path, cpu_python, fake_slurm):
    task, lines = StandIn(tmp_path, fake_slurm), []
    # with a line reader (as nanotron's progress has): the ranks' stdout is piped through it, every line
    elapsed = run(task, cpu_python, str(700000 + os.getpid() % 1000), on_line=lines.append)
    assert sorted(x.split(":")[0] for x in lines if x.startswith("probe rank")) == ["probe rank 0/2 on " + HOST,
                                                                                 "probe rank 1/2 on " + HOST]
    got = ranks(task.ctx.output_dir)
    assert sorted(r["rank"] for r in got) == [0, 1] and sorted(r["local_rank"] for r in got) == [0, 1]
    assert {r["world_size"] for r in got} == {2} and {r["all_reduce"] for r in got} == {2.0}
    assert {r["node"] for r in got} == {HOST} and len({r["pid"] for r in got}) == 2
    # one bootstrap store for both: rank 0's --local-addr, and the port torchrun picked for it
    assert len({(r["master_addr"], r["master_port"]) for r in got}) == 1 and got[0]["master_addr"] == HOST
    assert task.child.returncode == 0
    print(f"2-rank torchrun run took {elapsed:.1f} s")


def test_a_dying_rank_ends_the_group_and_launch_raises(tmp_path, cpu_python, fake_slurm):
    task = StandIn(tmp_path, fake_slurm)
    t0 = time.perf_counter()
    with pytest.raises(RuntimeError, match="torchrun exited with status 1"):
        run(task, cpu_python, str(710000 + os.getpid() % 1000), PROBE_FAIL_RANK="1")
    elapsed = time.perf_counter() - t0
    assert elapsed < 60, f"the group took {elapsed:.1f} s to end after rank 1 died"
    # both ranks got as far as the all-reduce; rank 0 was then ended by torchrun, not left waiting
    assert sorted(r["rank"] for r in ranks(task.ctx.output_dir)) == [0, 1]
    print(f"failed torchrun run ended after {elapsed:.1f} s")


@pytest.mark.parametrize("sig", ["USR2", "TERM"])
def test_stop_signal_reaches_every_rank_and_requeues(tmp_path, cpu_python, fake_slurm, sig):
    """What jobs.task does on the pre-timeout signal (USR2), and on a SIGTERM without it (Slurm ending,
    requeueing or preempting the job): set stop_requested, signal the child's process group.
    torchrun's workers live in their own sessions: torchrun itself must pass the signal on."""
    task = StandIn(tmp_path, fake_slurm)
    result = {}
    signum = getattr(signal, "SIG" + sig)

    def target():
        try:
            run(task, cpu_python, str(720000 + os.getpid() % 1000 + 10 * (sig == "TERM")), PROBE_WAIT_SIGNAL=sig)
            result["outcome"] = "returned"
        except BaseException as e:  # noqa: BLE001
            result["outcome"] = e

    th = threading.Thread(target=target, daemon=True)
    th.start()
    out = task.ctx.output_dir
    deadline = time.time() + 120
    while len(ranks(out)) < 2 and th.is_alive() and time.time() < deadline:
        time.sleep(0.1)
    assert len(ranks(out)) == 2, result
    t0 = time.perf_counter()
    task.ctx.stop_requested.set()
    os.killpg(task.child.pid, signum)
    th.join(timeout=60)
    assert not th.is_alive(), "torchrun did not end after the stop signal"
    assert isinstance(result["outcome"], Requeue), result
    stopped = [json.loads(p.read_text()) for p in sorted(out.glob("rank-*.stopped.json"))]
    assert [s["rank"] for s in stopped] == [0, 1] and all(s["signals"] == [signum] for s in stopped)
    print(f"stop signal to requeue: {time.perf_counter() - t0:.1f} s, torchrun exit {task.child.returncode}")
