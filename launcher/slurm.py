"""Talking to Slurm: submit with `sbatch --parsable`, one batched `sacct` per status, one `scancel`,
and the cluster facts preflight needs (three `scontrol` calls)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional

from .arrays import expand
from .errors import LauncherError, SubmissionError
from .plan import parse_time_min

# sacct state → the launcher's task state
STATE_MAP = {
    "PENDING": "pending", "REQUEUED": "pending", "REQUEUE_FED": "pending", "REQUEUE_HOLD": "pending",
    "RESIZING": "pending", "SUSPENDED": "pending", "PREEMPTED": "pending",
    "RUNNING": "running", "COMPLETING": "running", "CONFIGURING": "running", "STAGE_OUT": "running",
    "SIGNALING": "running",
    "COMPLETED": "completed",
    "CANCELLED": "cancelled",
    "FAILED": "failed", "TIMEOUT": "failed", "NODE_FAIL": "failed", "OUT_OF_MEMORY": "failed",
    "BOOT_FAIL": "failed", "DEADLINE": "failed", "REVOKED": "failed", "SPECIAL_EXIT": "failed",
}


@dataclass
class Node:
    name: str
    cpus: int
    mem_mb: int
    gpus: int
    partitions: List[str]
    state: str


@dataclass
class Partition:
    name: str
    max_time_min: Optional[int]  # None: UNLIMITED
    max_nodes: Optional[int]
    default: bool
    state: str
    nodes: List[Node] = field(default_factory=list)


@dataclass
class ClusterInfo:
    max_array_size: int
    partitions: Dict[str, Partition]
    max_job_count: Optional[int] = None  # job records slurmctld holds; every array task is one

    @property
    def default_partition(self) -> Optional[str]:
        return next((p.name for p in self.partitions.values() if p.default), None)


def _kv(line: str) -> Dict[str, str]:
    """`scontrol -o` record → dict. Values never contain spaces except the last free-text fields."""
    out = {}
    for tok in line.split():
        if "=" in tok:
            k, v = tok.split("=", 1)
            out[k] = v
    return out


def _gpus(gres: str) -> int:
    """'gpu:4', 'gpu:a100:8(S:0-1)', 'gpu:h100:4,shard:8' → GPU count."""
    total = 0
    for item in gres.split(","):
        parts = item.split("(")[0].split(":")
        if parts[0] == "gpu" and len(parts) >= 2 and parts[-1].isdigit():
            total += int(parts[-1])
    return total


def parse_cluster_info(config: str, partitions: str, nodes: str) -> ClusterInfo:
    m = re.search(r"^MaxArraySize\s*=\s*(\d+)", config, re.M)
    node_list = []
    for line in nodes.splitlines():
        d = _kv(line)
        if "NodeName" not in d:
            continue
        node_list.append(Node(name=d["NodeName"], cpus=int(d.get("CPUTot", 0)), mem_mb=int(d.get("RealMemory", 0)),
                              gpus=_gpus(d.get("Gres", "")), partitions=d.get("Partitions", "").split(","),
                              state=d.get("State", "")))
    parts = {}
    for line in partitions.splitlines():
        d = _kv(line)
        if "PartitionName" not in d:
            continue
        mt = d.get("MaxTime", "UNLIMITED")
        mn = d.get("MaxNodes", "UNLIMITED")
        name = d["PartitionName"]
        parts[name] = Partition(name=name, max_time_min=None if mt in ("UNLIMITED", "INFINITE") else parse_time_min(mt),
                                max_nodes=None if mn == "UNLIMITED" else int(mn), default=d.get("Default") == "YES",
                                state=d.get("State", ""), nodes=[n for n in node_list if name in n.partitions])
    jc = re.search(r"^MaxJobCount\s*=\s*(\d+)", config, re.M)
    return ClusterInfo(max_array_size=int(m.group(1)) if m else 1001, partitions=parts,
                       max_job_count=int(jc.group(1)) if jc else None)


def parse_sacct(text: str) -> Dict[str, Dict[int, str]]:
    """`sacct -X -n -P -o JobID,State` → {array job id: {array index: task state}}.
    Pending array tasks not yet split off appear as one line `123_[4-7%2]`."""
    out: Dict[str, Dict[int, str]] = {}
    for line in text.splitlines():
        if "|" not in line:
            continue
        jobid, state = line.split("|")[:2]
        state = STATE_MAP.get(state.split()[0] if state else "", "pending")
        base, _, idx = jobid.partition("_")
        if not idx:
            continue  # not an array task (we only submit arrays)
        for i in expand(idx) if idx.startswith("[") else [int(idx)]:
            out.setdefault(base, {})[i] = state
    return out


class Slurm:
    def __init__(self, cluster: dict):
        # Inside an salloc/sbatch allocation the shell carries SLURM_* variables (job id, node list,
        # memory, tasks) that sbatch would read as options of the new job: drop them, keep SLURM_CONF.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") or k == "SLURM_CONF"}
        if cluster.get("slurm_conf") and "SLURM_CONF" not in os.environ:
            self.env["SLURM_CONF"] = cluster["slurm_conf"]
        self.calls: Dict[str, int] = {}  # how many times each client ran (benchmarks assert on it)

    def _run(self, argv: List[str], timeout: float = 60) -> str:
        self.calls[argv[0]] = self.calls.get(argv[0], 0) + 1
        if shutil.which(argv[0], path=self.env.get("PATH")) is None:
            raise LauncherError(f"`{argv[0]}` not found: is this a Slurm login node? (cluster=local runs without Slurm)")
        try:
            p = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise LauncherError(f"`{' '.join(argv[:3])}` did not answer in {timeout:.0f} s") from e
        if p.returncode != 0:
            raise LauncherError(f"`{' '.join(argv[:3])} ...` failed ({p.returncode}): {p.stderr.strip() or p.stdout.strip()}")
        return p.stdout

    def info(self) -> ClusterInfo:
        return parse_cluster_info(self._run(["scontrol", "show", "config"]),
                                  self._run(["scontrol", "-o", "show", "partition"]),
                                  self._run(["scontrol", "-o", "show", "node"]))

    def srun_help(self) -> str:
        """`srun --help`: SPANK plugins add their options there (pyxis: --container-image)."""
        return self._run(["srun", "--help"])

    def associations(self, user: str) -> tuple[set, set]:
        """(accounts, qos names) the user may submit with."""
        out = self._run(["sacctmgr", "-n", "-P", "show", "assoc", f"user={user}", "format=Account,QOS"])
        accounts, qos = set(), set()
        for line in out.splitlines():
            acc, _, q = line.partition("|")
            accounts.add(acc.strip())
            qos.update(x for x in q.strip().split(",") if x)
        return accounts, qos

    def submit(self, script: Path, dependency: Optional[str]) -> str:
        argv = ["sbatch", "--parsable", "--kill-on-invalid-dep=yes"]
        if dependency:
            argv.append(f"--dependency={dependency}")
        try:
            out = self._run(argv + [str(script)])
        except LauncherError as e:
            raise SubmissionError(str(e)) from e
        m = re.match(r"^(\d+)(;\S+)?$", out.strip())  # --parsable: "<jobid>[;<cluster>]"
        if not m:
            raise SubmissionError(f"unexpected sbatch --parsable output: {out!r}")
        return m.group(1)

    def query(self, job_ids: Iterable[str]) -> Dict[str, Dict[int, str]]:
        ids = sorted(set(job_ids), key=int)
        if not ids:
            return {}
        return parse_sacct(self._run(["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(ids)]))

    def cancel(self, job_ids: Iterable[str]) -> None:
        ids = sorted(set(job_ids))
        if ids:
            self._run(["scancel", *ids])
