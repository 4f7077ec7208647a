"""jobs.adapters.torchrun: the torchrun command line; the rendezvous port (jobs.runtime.ports) and the
allocation's hosts (jobs.runtime.allocation)."""
import os
import socket
import stat
import subprocess
import sys

import pytest

from jobs.adapters.torchrun import torchrun_argv
from jobs.runtime.allocation import node_hosts
from jobs.runtime.ports import rdzv_port

GOLDEN_NODE0 = [
    "/env/bin/python", "-m", "torch.distributed.run",
    "--nnodes=2", "--nproc-per-node=8",
    "--rdzv-backend=c10d", "--rdzv-endpoint=gpu-a01:23456", "--rdzv-id=123456",
    "--rdzv-conf=is_host=1", "--local-addr=gpu-a01",
    "--max-restarts=0", "--signals-to-handle=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR2",
    "/code/run_train.py", "--config-file", "/run/config.yaml",
]


def test_torchrun_argv_golden_two_nodes():
    hosts = ["gpu-a01", "gpu-a02"]
    port = rdzv_port("123456", 20000)
    assert port == 23456
    target = ["/code/run_train.py", "--config-file", "/run/config.yaml"]
    assert torchrun_argv("/env/bin/python", hosts, 8, "123456", port, target) == GOLDEN_NODE0
    # the second node: same rendezvous, does not host it, publishes its own name
    node1 = torchrun_argv("/env/bin/python", hosts, 8, "123456", port, target, node_rank=1)
    assert node1 == [a.replace("is_host=1", "is_host=0").replace("--local-addr=gpu-a01", "--local-addr=gpu-a02")
                     for a in GOLDEN_NODE0]


def test_torchrun_argv_stop_signal_and_shutdown_timeout():
    argv = torchrun_argv("py", ["n1"], 2, "7", 20007, ["-m", "jobs.demo.dist_probe"], stop_signal="SIGUSR1",
                         shutdown_timeout=80)
    assert "--signals-to-handle=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1" in argv
    assert argv[-3:] == ["--shutdown-timeout=80", "-m", "jobs.demo.dist_probe"]
    # a stop signal torchrun already handles is not listed twice
    assert "--signals-to-handle=SIGTERM,SIGINT,SIGHUP,SIGQUIT" in torchrun_argv("py", ["n1"], 1, "7", 1, ["x"],
                                                                               stop_signal="TERM")
    with pytest.raises(ValueError):
        torchrun_argv("py", ["n1", "n2"], 1, "7", 20007, ["x"], node_rank=2)


@pytest.mark.parametrize("job_id,base,port", [
    ("123456", 20000, 23456),
    ("9999", 20000, 29999),
    ("10000", 20000, 20000),  # wraps every 10000 jobs
    ("5", 29500, 29505),
    ("17_3", 20000, 20173),  # array form (the local backend's ids): tasks of one array differ
    ("17_4", 20000, 20174),
])
def test_rdzv_port(job_id, base, port):
    assert rdzv_port(job_id, base) == port


def test_rdzv_port_consecutive_jobs_differ():
    assert len({rdzv_port(str(j), 20000) for j in range(4_000_000, 4_010_000)}) == 10_000


def test_rdzv_port_rejects_nonsense():
    with pytest.raises(ValueError):
        rdzv_port("local", 20000)
    with pytest.raises(ValueError):
        rdzv_port("9999", 60000)  # 69999


def test_node_hosts_without_a_nodelist_raises():
    with pytest.raises(RuntimeError, match="SLURM_JOB_NODELIST"):
        node_hosts({"PATH": os.environ["PATH"]})


def test_node_hosts_local_backend_is_this_machine():
    assert node_hosts({"LAUNCHER_BACKEND": "local"}) == [socket.gethostname()]


FAKE_SCONTROL = """#!/bin/sh
# expands one hostlist, like `scontrol show hostnames`; anything else is an error
if [ "$1" = show ] && [ "$2" = hostnames ] && [ "$3" = 'gpu-a[01-02]' ]; then
  printf 'gpu-a01\\ngpu-a02\\n'; exit 0
fi
echo "scontrol: error: unexpected arguments: $*" >&2
exit 1
"""


@pytest.fixture
def fake_path(tmp_path):
    script = tmp_path / "bin" / "scontrol"
    script.parent.mkdir()
    script.write_text(FAKE_SCONTROL)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return f"{script.parent}:{os.environ['PATH']}"


def test_node_hosts_expands_the_nodelist_with_scontrol(fake_path):
    assert subprocess.run(["scontrol", "show", "hostnames", "gpu-a[01-02]"], env={"PATH": fake_path},
                          capture_output=True, text=True).stdout.split() == ["gpu-a01", "gpu-a02"]
    assert node_hosts({"PATH": fake_path, "SLURM_JOB_NODELIST": "gpu-a[01-02]"}) == ["gpu-a01", "gpu-a02"]
    # SLURM_NODELIST (older Slurm, or a step) when SLURM_JOB_NODELIST is missing
    assert node_hosts({"PATH": fake_path, "SLURM_NODELIST": "gpu-a[01-02]"}) == ["gpu-a01", "gpu-a02"]


def test_node_hosts_scontrol_failure_raises(fake_path, tmp_path):
    with pytest.raises(RuntimeError, match="unexpected arguments"):
        node_hosts({"PATH": fake_path, "SLURM_JOB_NODELIST": "gpu-b[1-4]"})
    with pytest.raises(RuntimeError, match="scontrol"):  # no scontrol at all
        node_hosts({"PATH": str(tmp_path / "empty"), "SLURM_JOB_NODELIST": "gpu-a[01-02]"})


def test_launch_imports_no_torch():
    code = "import sys, jobs.adapters.torchrun; print('torch' in sys.modules)"
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert p.stdout.strip() == "False"


def test_node_hosts_in_a_container_come_from_the_batch_script():
    """No scontrol in the image: the batch script (on the host) exported the expanded node list."""
    env = {"LAUNCHER_NODE_HOSTS": "mn2,mn3", "SLURM_JOB_NODELIST": "mn[2-3]", "PATH": "/nonexistent"}
    assert node_hosts(env) == ["mn2", "mn3"]
