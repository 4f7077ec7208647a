"""Cluster facts from `scontrol -o show config|partition|node|reservation`: the nodes, partitions,
reservations and limits preflight checks a request against. Parsers only (Slurm.info and
Slurm.reservations in client.py run the calls); a line of another shape (a site's banner) is ignored."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from launcher.sbatch.values import parse_time_min


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
    qos: Optional[str] = None  # the partition's own QOS (QoS=; None for N/A): its limits hold over the job's


@dataclass
class ClusterInfo:
    max_array_size: int
    partitions: Dict[str, Partition]
    max_job_count: Optional[int] = None  # job records slurmctld holds; every array task is one
    # AccountingStorageType is not accounting_storage/none: sacct can answer (None: not said)
    accounting: Optional[bool] = None
    cluster_name: Optional[str] = None  # ClusterName: which associations are this cluster's

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
        if not line.startswith("NodeName="):  # a site's banner around the records
            continue
        d = _kv(line)
        node_list.append(Node(name=d["NodeName"], cpus=int(d.get("CPUTot", 0)), mem_mb=int(d.get("RealMemory", 0)),
                              gpus=_gpus(d.get("Gres", "")), partitions=d.get("Partitions", "").split(","),
                              state=d.get("State", ""), features=_features(d.get("AvailableFeatures", "")),
                              gres=parse_gres(d.get("Gres", ""))))
    parts = {}
    for line in partitions.splitlines():
        if not line.startswith("PartitionName="):
            continue
        d = _kv(line)
        mt = d.get("MaxTime", "UNLIMITED")
        mn = d.get("MaxNodes", "UNLIMITED")
        name = d["PartitionName"]
        parts[name] = Partition(name=name, max_time_min=None if mt in ("UNLIMITED", "INFINITE") else parse_time_min(mt),
                                max_nodes=None if mn == "UNLIMITED" else int(mn), default=d.get("Default") == "YES",
                                state=d.get("State", ""), nodes=[n for n in node_list if name in n.partitions],
                                qos=None if d.get("QoS", "N/A") in ("N/A", "(null)", "") else d["QoS"])
    jc = re.search(r"^MaxJobCount\s*=\s*(\d+)", config, re.M)
    acct = re.search(r"^AccountingStorageType\s*=\s*(\S+)", config, re.M)
    cluster = re.search(r"^ClusterName\s*=\s*(\S+)", config, re.M)
    return ClusterInfo(max_array_size=int(m.group(1)) if m else 1001, partitions=parts,
                       max_job_count=int(jc.group(1)) if jc else None,
                       accounting=None if acct is None else acct.group(1) != "accounting_storage/none",
                       cluster_name=cluster.group(1) if cluster else None)
