"""A node that dies under a multi-node task (issue 19 item 3): the survivor's jobs.task finds the dead
peer (its slurmd no longer answers) and leaves no failure marker; status takes a NODE_FAIL that Slurm
has requeued as pending, asking the controller (one squeue, only then)."""
import socket

import pytest

from jobs.runtime import allocation
from launcher.slurm.client import Slurm

pytestmark = pytest.mark.unit


def test_unreachable_nodes_are_those_whose_slurmd_refuses(tmp_path):
    alive = socket.socket()
    alive.bind(("127.0.0.1", 0))
    alive.listen()
    port = alive.getsockname()[1]
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead_port = dead.getsockname()[1]
    dead.close()  # nothing listens there any more
    try:
        assert allocation.unreachable_nodes(["127.0.0.1"], port) == []
        assert allocation.unreachable_nodes(["127.0.0.1"], dead_port, timeout_s=1) == ["127.0.0.1"]
    finally:
        alive.close()


def _slurm(answers: dict, calls: list) -> Slurm:
    s = Slurm({}, accounting=True)

    def fake(argv, timeout=60):
        calls.append(argv[0])
        return answers[argv[0]]

    s._run = fake
    return s


def test_a_node_fail_that_slurm_requeued_is_pending():
    calls = []
    s = _slurm({"sacct": "501_0|NODE_FAIL\n501_1|RUNNING\n", "squeue": "501_0|PENDING\n501_1|RUNNING\n"}, calls)
    assert s.query(["501"]) == {"501": {0: "pending", 1: "running"}}
    assert calls == ["sacct", "squeue"]


def test_a_node_fail_the_controller_no_longer_holds_stays_failed_and_no_squeue_without_one():
    calls = []
    s = _slurm({"sacct": "502_0|NODE_FAIL\n", "squeue": ""}, calls)
    assert s.query(["502"]) == {"502": {0: "failed"}}
    calls.clear()
    s = _slurm({"sacct": "503_0|FAILED\n503_1|COMPLETED\n"}, calls)
    assert s.query(["503"]) == {"503": {0: "failed", 1: "completed"}} and calls == ["sacct"]
