"""The allocation a task runs in: its hosts in Slurm's order, this node's rank among them, and the job
id the nodes of one job derive their rendezvous port from. Standard library only (scontrol is the one
Slurm client asked)."""
from __future__ import annotations

import os
import re
import socket
import subprocess
from typing import Mapping

_HOSTNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # RFC 1123 labels (and Slurm node names)


def is_local(env: Mapping[str, str]) -> bool:
    """The local backend: one machine, no Slurm allocation."""
    return env.get("LAUNCHER_BACKEND") == "local"


def node_hosts(env: Mapping[str, str] = os.environ) -> list[str]:
    """The allocation's hosts in Slurm's order (`scontrol show hostnames`); the first one hosts the
    rendezvous. No silent fallback to localhost: a multi-node job that guessed wrong would hang.
    Raises RuntimeError when the node list is unknown or scontrol fails or disagrees with the node count."""
    if is_local(env):  # the local backend: explicitly one machine
        return [socket.gethostname()]
    if env.get("LAUNCHER_NODE_HOSTS"):  # a container without Slurm: the batch script expanded the list
        return env["LAUNCHER_NODE_HOSTS"].split(",")
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    if not nodelist:
        raise RuntimeError("cannot find the allocation's nodes: neither SLURM_JOB_NODELIST nor SLURM_NODELIST "
                           "is set (torchrun stages run inside a Slurm job, or on the local backend)")
    try:
        p = subprocess.run(["scontrol", "show", "hostnames", nodelist], env=dict(env), capture_output=True,
                           text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise RuntimeError(f"`scontrol show hostnames {nodelist}` failed: {e}") from e
    # One host name per line; a site's wrapper may print banner lines around them (never read as hosts).
    hosts = [line.strip() for line in p.stdout.splitlines() if _HOSTNAME.match(line.strip())]
    if p.returncode != 0 or not hosts:
        raise RuntimeError(f"`scontrol show hostnames {nodelist}` failed (exit {p.returncode}): "
                           f"{(p.stderr or p.stdout).strip()[-500:]}")
    expected = env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES")
    if expected and expected.isdigit() and len(hosts) != int(expected):
        raise RuntimeError(f"`scontrol show hostnames {nodelist}` gave {len(hosts)} host(s) for a "
                           f"{expected}-node allocation: {p.stdout.strip()[-500:]!r}")
    return hosts


def node_rank(env: Mapping[str, str]) -> int:
    """This node's index in node_hosts(): SLURM_NODEID (one jobs.task per node; SLURM_PROCID when
    Slurm set no node id), 0 on the local backend."""
    if is_local(env):
        return 0
    return int(env.get("SLURM_NODEID") or env.get("SLURM_PROCID") or 0)


def slurmd_port(env: Mapping[str, str] = os.environ) -> int | None:
    """The cluster's SlurmdPort (`scontrol show config`; Slurm's default 6818 when it prints none), None
    when scontrol does not answer."""
    try:
        p = subprocess.run(["scontrol", "show", "config"], env=dict(env), capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if p.returncode != 0:
        return None
    m = re.search(r"^SlurmdPort\s*=\s*(\d+)", p.stdout, re.M)
    return int(m.group(1)) if m else 6818


def unreachable_nodes(hosts: list[str], port: int, timeout_s: float = 3.0) -> list[str]:
    """The hosts whose slurmd accepts no TCP connection on `port` within timeout_s seconds: a node that
    died (its slurmd with it) before Slurm noticed (SlurmdTimeout, 300 s by default)."""
    lost = []
    for host in hosts:
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
        except OSError:
            lost.append(host)
    return lost
