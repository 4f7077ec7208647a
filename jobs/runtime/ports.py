"""Ports a task opens on its node: the rendezvous port every node of one job derives alike (torchrun's
c10d store, accelerate's main process), and a port that is free on this node (a server). Standard
library only."""
from __future__ import annotations

import re
import socket


def rdzv_port(job_id: str, base: int) -> int:
    """base + (job id % 10000): jobs running at the same time get different ports (Slurm job ids are
    sequential). Array forms (`17_3`, the local backend's ids) keep all their digits, so the tasks of
    one array differ too. Raises ValueError for a job id without digits or a port outside 1024-65535."""
    digits = "".join(re.findall(r"\d+", str(job_id)))
    if not digits:
        raise ValueError(f"job id {job_id!r} has no number to derive a rendezvous port from")
    port = base + int(digits) % 10000
    if not 1024 <= port <= 65535:
        raise ValueError(f"rendezvous port {port} (base {base}) is outside 1024-65535")
    return port


def free_port(job_id: str, base: int, span: int = 10000) -> int:
    """The first port from base + job id % span (rdzv_port) that nothing on this node listens on,
    trying base..base+span-1 in turn. Raises RuntimeError when none binds."""
    first = rdzv_port(job_id, base)
    for i in range(span):
        port = base + (first - base + i) % span
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("0.0.0.0", port))
                return port
            except OSError:
                continue
    raise RuntimeError(f"no free port in {base}..{base + span - 1}")
