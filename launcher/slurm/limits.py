"""QOS and association limits: a request over one of them is not refused by sbatch, it pends forever
with a reason such as QOSMaxGRESPerUser or AssocMaxWallDurationPerJobLimit. Read from two `sacctmgr`
calls (`show assoc` for the user, `show qos`), checked here before submission. Pure functions.

Limits read (sacctmgr(1), "SPECIFICATIONS FOR QOS" / "... FOR ASSOCIATIONS"; resource_limits page):
MaxTRES (per job), MaxTRESPU (per user: one job over it never starts), GrpTRES (the whole QOS or
association: likewise), MaxWall (per job), MaxSubmitPU / MaxSubmit (jobs a user may have queued: each
array task counts, so a run with more tasks can never be queued whole)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from launcher.sbatch.values import time_seconds

QOS_FORMAT = "Name,MaxTRES,MaxTRESPU,GrpTRES,MaxWall,MaxSubmitPU"
ASSOC_FORMAT = "Account,Partition,DefaultQOS,MaxTRES,GrpTRES,MaxWall,MaxSubmit"
_MEM_UNITS = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 ** 2, "P": 1024 ** 3}


@dataclass
class Limits:
    """One QOS's or association's limits; None: no limit. TRES maps are {name: amount}, memory in MB."""

    source: str  # "QOS 'normal'", "association root/debug"
    max_tres: Dict[str, int] = field(default_factory=dict)  # per job
    max_tres_per_user: Dict[str, int] = field(default_factory=dict)
    grp_tres: Dict[str, int] = field(default_factory=dict)
    max_wall_min: Optional[int] = None
    max_submit: Optional[int] = None


@dataclass
class AccountingLimits:
    qos: Dict[str, Limits] = field(default_factory=dict)
    # (account, partition or "") -> (limits, default QOS or None)
    associations: Dict[Tuple[str, str], Tuple[Limits, Optional[str]]] = field(default_factory=dict)


def parse_tres(text: str) -> Dict[str, int]:
    """'cpu=64,gres/gpu=8,mem=100G,node=2' → {'cpu': 64, 'gres/gpu': 8, 'mem': 102400, 'node': 2}
    (mem in MB). Unreadable items are skipped (sites add TRES of their own: license/..., billing)."""
    out = {}
    for item in (text or "").split(","):
        name, _, value = item.partition("=")
        m = re.fullmatch(r"(\d+)([KMGTP]?)", value.strip())
        if not name or not m:
            continue
        number, unit = int(m.group(1)), m.group(2)
        out[name.strip()] = int(number * _MEM_UNITS[unit or "M"]) if name.strip() == "mem" else number
    return out


def _wall_min(text: str) -> Optional[int]:
    """sacctmgr's MaxWall ('1-00:00:00', '02:00:00', '') → minutes, None for none."""
    text = (text or "").strip()
    if not text or text.upper() in ("UNLIMITED", "INFINITE"):
        return None
    try:
        return time_seconds(text) // 60
    except ValueError:
        return None


def _count(text: str) -> Optional[int]:
    return int(text) if (text or "").strip().isdigit() else None


def parse_limits(qos_text: str, assoc_text: str) -> AccountingLimits:
    """`sacctmgr -n -P show qos format=QOS_FORMAT` and `... show assoc user=U format=ASSOC_FORMAT`
    → AccountingLimits. Lines of another shape (site banners) are ignored."""
    out = AccountingLimits()
    for line in qos_text.splitlines():
        f = line.strip().split("|")
        if len(f) != 6 or not f[0] or " " in f[0]:
            continue
        out.qos[f[0]] = Limits(f"QOS '{f[0]}'", parse_tres(f[1]), parse_tres(f[2]), parse_tres(f[3]),
                               _wall_min(f[4]), _count(f[5]))
    for line in assoc_text.splitlines():
        f = line.strip().split("|")
        if len(f) != 7 or not f[0] or " " in f[0]:
            continue
        where = f"association {f[0]}" + (f"/{f[1]}" if f[1] else "")
        out.associations[(f[0], f[1])] = (Limits(where, parse_tres(f[3]), {}, parse_tres(f[4]), _wall_min(f[5]),
                                                 _count(f[6])), f[2] or None)
    return out


def job_tres(resources: dict) -> Dict[str, int]:
    """What one array task of a stage asks for, in Slurm's TRES names (mem in MB; 0 when not given)."""
    from launcher.sbatch.values import mem_mb

    nodes = resources["nodes"]
    cpus = nodes * resources["ntasks_per_node"] * resources["cpus_per_task"]
    gpus = nodes * resources["gpus_per_node"]
    mem = nodes * mem_mb(resources["mem_gb"]) if resources.get("mem_gb") else 0
    tres = {"cpu": cpus, "node": nodes, "mem": mem}
    if gpus:
        tres["gres/gpu"] = gpus
        if resources.get("gpu_type"):
            tres[f"gres/gpu:{resources['gpu_type']}"] = gpus
    return tres


def applicable(limits: AccountingLimits, account: Optional[str], partition: Optional[str],
               qos: Optional[str]) -> List[Limits]:
    """The limits a job with this account, partition and QOS is held to: the association (the
    partition's own, else the account's) and the QOS (the one asked for, else the association's
    default)."""
    out = []
    assoc = None
    for key in ((account, partition or ""), (account, "")):
        if key in limits.associations:
            assoc = limits.associations[key]
            break
    # No account given: Slurm uses the user's DefaultAccount (`sacctmgr show user`), not asked here;
    # unambiguous only when the user has one account.
    if assoc is None and account is None and len({a for a, _ in limits.associations}) == 1:
        mine = dict(limits.associations)
        assoc = next((mine[k] for k in mine if k[1] == (partition or "")), None) or \
            next((mine[k] for k in mine if k[1] == ""), None)
    if assoc is not None:
        out.append(assoc[0])
    name = qos or (assoc[1] if assoc else None)
    if name and name in limits.qos:
        out.append(limits.qos[name])
    return out


def limit_problems(tres: Dict[str, int], time_min: Optional[int], run_tasks: int,
                   held_to: Sequence[Limits]) -> List[Tuple[str, str]]:
    """(resources key, message) for each limit one array task (`tres`, `time_min`; None: UNLIMITED)
    or the whole run (`run_tasks` jobs queued at once) is over; the message names the limit and where
    it comes from, and the reason Slurm would give while the job pends."""
    out: List[Tuple[str, str]] = []
    key_of = {"cpu": "cpus_per_task", "node": "nodes", "mem": "mem_gb"}
    for lim in held_to:
        for label, table in (("MaxTRES (per job)", lim.max_tres), ("MaxTRESPerUser", lim.max_tres_per_user),
                             ("GrpTRES", lim.grp_tres)):
            for name, cap in table.items():
                if name in tres and tres[name] > cap:
                    key = "gpus_per_node" if name.startswith("gres/gpu") else key_of.get(name, "nodes")
                    unit = " MB" if name == "mem" else ""
                    out.append((key, f"one task asks for {name}={tres[name]}{unit}, over {lim.source} {label} "
                                     f"{name}={cap}{unit}: the job would pend forever (sacctmgr show "
                                     f"{'qos' if lim.source.startswith('QOS') else 'assoc'})"))
        if lim.max_wall_min is not None and (time_min is None or time_min > lim.max_wall_min):
            asked = "no time limit" if time_min is None else f"{time_min} min"
            out.append(("time", f"{asked} is over {lim.source} MaxWall ({lim.max_wall_min} min): the job would "
                                f"pend forever"))
        if lim.max_submit is not None and run_tasks > lim.max_submit:
            out.append(("tasks", f"the run queues {run_tasks} array tasks, over {lim.source} MaxSubmitJobs "
                                 f"({lim.max_submit}; every array task counts): sbatch would refuse a part of it"))
    return out
