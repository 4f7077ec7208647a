"""Talking to Slurm: submit with `sbatch --parsable`, one batched `sacct` per status, one `scancel`,
and the cluster facts preflight needs (three `scontrol` calls; reservations are a fourth, made only
when asked for: `Slurm.reservations`)."""
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
from .slurm_values import parse_time_min

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
    features: List[str] = field(default_factory=list)  # AvailableFeatures: what --constraint may name
    # Gres by name and type: 'gpu:a100:4,gpu:h100:4,shard:8' -> {'gpu': {'a100': 4, 'h100': 4}, 'shard': {'': 8}}
    # ('' for an untyped count). What --gres=gpu:<type>:N may ask for.
    gres: Dict[str, Dict[str, int]] = field(default_factory=dict)


@dataclass
class Reservation:
    """One `scontrol -o show reservation` record: what --reservation=<name> may use, and when."""

    name: str
    nodes: List[str]  # expanded host names ('' list for none)
    node_spec: str  # Nodes= as Slurm printed it (a hostlist expression)
    start: str
    end: str
    partition: Optional[str]
    users: List[str]
    accounts: List[str]
    flags: List[str]
    state: str  # ACTIVE or INACTIVE


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
    return sum(parse_gres(gres).get("gpu", {}).values())


def parse_gres(gres: str) -> Dict[str, Dict[str, int]]:
    """A node's Gres= ('gpu:a100:8(S:0-1),gpu:4,shard:8', '(null)') → {name: {type or '': count}}.
    Slurm prints name[:type][:count][(S:sockets)]; a missing count is 1 (gres.conf(5))."""
    out: Dict[str, Dict[str, int]] = {}
    for item in re.split(r",(?![^(]*\))", gres or ""):  # commas inside (S:0-1,3) are not separators
        item = item.split("(")[0].strip()
        if not item or item == "null":
            continue
        parts = item.split(":")
        count = 1
        if len(parts) > 1 and re.fullmatch(r"\d+[KMGTP]?", parts[-1]):
            count = _count(parts.pop())
        kind = parts[1] if len(parts) > 1 else ""
        out.setdefault(parts[0], {})
        out[parts[0]][kind] = out[parts[0]].get(kind, 0) + count
    return out


def _count(text: str) -> int:
    mult = {"K": 1024, "M": 1024 ** 2, "G": 1024 ** 3, "T": 1024 ** 4, "P": 1024 ** 5}
    return int(text[:-1]) * mult[text[-1]] if text[-1] in mult else int(text)


def _features(value: str) -> List[str]:
    return [] if value in ("", "(null)") else [f for f in value.split(",") if f]


def expand_hostlist(spec: str) -> List[str]:
    """A Slurm hostlist ('node[01-03,07],gpu5') → host names, without calling `scontrol show hostnames`."""
    out: List[str] = []
    for part in re.findall(r"[^,\[]+(?:\[[^\]]*\])?[^,]*", spec or ""):
        m = re.fullmatch(r"([^\[]*)\[([^\]]*)\](.*)", part)
        if not m:
            out.append(part)
            continue
        head, ranges, tail = m.groups()
        for r in ranges.split(","):
            lo, _, hi = r.partition("-")
            for i in range(int(lo), int(hi or lo) + 1):
                out.append(f"{head}{str(i).zfill(len(lo))}{tail}")
    return [h for h in out if h and h != "(null)"]


def parse_reservations(text: str) -> Dict[str, Reservation]:
    """`scontrol -o show reservation` → {name: Reservation}; 'No reservations in the system' → {}."""
    out = {}
    for line in text.splitlines():
        d = _kv(line)
        if "ReservationName" not in d:
            continue

        def items(k: str) -> List[str]:
            v = d.get(k, "")
            return [] if v in ("", "(null)") else v.split(",")

        out[d["ReservationName"]] = Reservation(
            name=d["ReservationName"], nodes=expand_hostlist(d.get("Nodes", "")), node_spec=d.get("Nodes", ""),
            start=d.get("StartTime", ""), end=d.get("EndTime", ""),
            partition=None if d.get("PartitionName", "(null)") == "(null)" else d["PartitionName"],
            users=items("Users"), accounts=items("Accounts"), flags=items("Flags"), state=d.get("State", ""))
    return out


def parse_cluster_info(config: str, partitions: str, nodes: str) -> ClusterInfo:
    m = re.search(r"^MaxArraySize\s*=\s*(\d+)", config, re.M)
    node_list = []
    for line in nodes.splitlines():
        d = _kv(line)
        if "NodeName" not in d:
            continue
        node_list.append(Node(name=d["NodeName"], cpus=int(d.get("CPUTot", 0)), mem_mb=int(d.get("RealMemory", 0)),
                              gpus=_gpus(d.get("Gres", "")), partitions=d.get("Partitions", "").split(","),
                              state=d.get("State", ""), features=_features(d.get("AvailableFeatures", "")),
                              gres=parse_gres(d.get("Gres", ""))))
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

    def reservations(self) -> Dict[str, Reservation]:
        """Advanced reservations (one `scontrol` call). Not part of `info()`: no config field names a
        reservation yet, so preflight does not pay for the call."""
        return parse_reservations(self._run(["scontrol", "-o", "show", "reservation"]))

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
