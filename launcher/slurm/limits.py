"""QOS and association limits: a request over one of them is not refused by sbatch, it pends forever
with a reason such as QOSMaxGRESPerUser or AssocMaxWallDurationPerJobLimit. Read from two `sacctmgr`
calls (`show qos`, and `show user <you> withassoc`: your associations and your DefaultAccount at once),
checked here before submission. Pure functions.

Limits read (sacctmgr(1), "SPECIFICATIONS FOR QOS" / "... FOR ASSOCIATIONS"; resource_limits page):
MaxTRES (per job), MaxTRESPU (per user: one job over it never starts), GrpTRES (the whole QOS or
association: likewise), MaxWall (per job), MaxSubmitPU / MaxSubmit and GrpSubmit (jobs that may be
queued at once: every array task counts, and sbatch refuses a job over them), MaxJobsPU / MaxJobs and
GrpJobs (jobs that may run at once: the others wait, so these only delay a run).

Which limits hold (resource_limits, "Hierarchy"): the partition's own QOS (`QoS=` of the partition),
then the job's QOS (the other way round when the job's QOS has the OverPartQOS flag), then the
association; a limit set at one level hides the same limit further down. Grp* limits are the
exception: each level's is enforced."""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from launcher.sbatch.values import time_seconds

QOS_FORMAT = "Name,Flags,MaxTRES,MaxTRESPU,GrpTRES,MaxWall,MaxSubmitPU,GrpSubmit,MaxJobsPU,GrpJobs"
# `sacctmgr show user <name> withassoc`: the user's fields (DefaultAccount), then one line per association
# (the association's fields; sacctmgr(1), "LIST/SHOW USER FORMAT OPTIONS": with WithAssoc the association
# format fields apply), on every cluster of the database: Cluster says which.
USER_FORMAT = ("Cluster,DefaultAccount,Account,Partition,DefaultQOS,MaxTRES,GrpTRES,MaxWall,MaxSubmit,GrpSubmit,"
               "MaxJobs,GrpJobs")
# `squeue -h -r -u <you> -t pending,running,suspended -o <this>`: one line per job or array task that
# counts toward a submit limit.
QUEUED_FORMAT = "%a|%q|%P"
_MEM_UNITS = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 ** 2, "P": 1024 ** 3}


@dataclass
class Limits:
    """One QOS's or association's limits; None: no limit. TRES maps are {name: amount}, memory in MB.
    The job counts: `max_submit`/`max_jobs` per user (a QOS's MaxSubmitPU/MaxJobsPU, an association's
    MaxSubmit/MaxJobs: the same limit to Slurm's hierarchy), `grp_*` for the whole QOS or association."""

    source: str  # "QOS 'normal'", "partition gpu's QOS 'part_gpu'", "association root/debug"
    max_tres: Dict[str, int] = field(default_factory=dict)  # per job
    max_tres_per_user: Dict[str, int] = field(default_factory=dict)
    grp_tres: Dict[str, int] = field(default_factory=dict)
    max_wall_min: Optional[int] = None
    max_submit: Optional[int] = None
    grp_submit: Optional[int] = None
    max_jobs: Optional[int] = None
    grp_jobs: Optional[int] = None
    flags: Tuple[str, ...] = ()
    # What a queued job must match to count toward this one's job counts: ("qos", name),
    # ("partition", name) for a partition's QOS, ("account", account, partition or "").
    scope: Tuple[str, ...] = ()

    @property
    def command(self) -> str:
        return "sacctmgr show assoc" if self.scope[:1] == ("account",) else "sacctmgr show qos"


@dataclass
class AccountingLimits:
    qos: Dict[str, Limits] = field(default_factory=dict)
    # (account, partition or "") -> (limits, default QOS or None)
    associations: Dict[Tuple[str, str], Tuple[Limits, Optional[str]]] = field(default_factory=dict)
    default_account: Optional[str] = None  # the user's DefaultAccount: what a job without --account gets


@dataclass(frozen=True)
class QueuedJob:
    """A job (or array task) of the user that slurmctld holds pending or running: what it counts toward."""

    account: str
    qos: str
    partition: str  # as squeue prints it: one, or a comma-separated list while pending


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


def _name(text: str) -> bool:
    return bool(text) and " " not in text


def parse_limits(qos_text: str, user_text: str, cluster: Optional[str] = None) -> AccountingLimits:
    """`sacctmgr -n -P show qos format=QOS_FORMAT` and `sacctmgr -n -P show user U withassoc
    format=USER_FORMAT` → AccountingLimits; `cluster` keeps that cluster's associations only (the
    database may serve several). Lines of another shape (site banners) are ignored."""
    out = AccountingLimits()
    for line in qos_text.splitlines():
        f = line.strip().split("|")
        if len(f) != 10 or not _name(f[0]):
            continue
        out.qos[f[0]] = Limits(f"QOS '{f[0]}'", parse_tres(f[2]), parse_tres(f[3]), parse_tres(f[4]), _wall_min(f[5]),
                               _count(f[6]), _count(f[7]), _count(f[8]), _count(f[9]),
                               flags=tuple(x for x in f[1].split(",") if x), scope=("qos", f[0]))
    for line in user_text.splitlines():
        f = line.strip().split("|")
        if len(f) != 12 or (cluster and f[0] and f[0] != cluster):
            continue
        if _name(f[1]):
            out.default_account = f[1]
        if not _name(f[2]):  # a user without associations: the user's own fields only
            continue
        where = f"association {f[2]}" + (f"/{f[3]}" if f[3] else "")
        out.associations[(f[2], f[3])] = (
            Limits(where, parse_tres(f[5]), {}, parse_tres(f[6]), _wall_min(f[7]), _count(f[8]), _count(f[9]),
                   _count(f[10]), _count(f[11]), scope=("account", f[2], f[3])), f[4] or None)
    return out


def parse_queued(text: str) -> List[QueuedJob]:
    """`squeue -h -r -u U -o QUEUED_FORMAT` → one QueuedJob per line; lines of another shape ignored."""
    out = []
    for line in text.splitlines():
        f = line.strip().split("|")
        if len(f) == 3 and _name(f[0]) and _name(f[2]):
            out.append(QueuedJob(*f))
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


def _association(limits: AccountingLimits, account: Optional[str], partition: Optional[str]):
    """(Limits, default QOS) of the association a job is held to: the partition's own, else the
    account's. No account given: Slurm uses the user's DefaultAccount; where it is not known, the
    account is taken only when the user has one."""
    if account is None:
        account = limits.default_account
    if account is None and len({a for a, _ in limits.associations}) == 1:
        account = next(iter(limits.associations))[0]
    for key in ((account, partition or ""), (account, "")):
        if key in limits.associations:
            return limits.associations[key]
    return None


def applicable(limits: AccountingLimits, account: Optional[str], partition: Optional[str], qos: Optional[str],
               partition_qos: Optional[str] = None) -> List[Limits]:
    """The limits a job with this account, partition and QOS is held to, highest level first: the
    partition's QOS (`partition_qos`, from `scontrol show partition`), the job's QOS (the one asked for,
    else the association's default; before the partition's when it has OverPartQOS), the association.
    Each keeps only the limits no level above it sets (Grp* limits: all of them)."""
    assoc = _association(limits, account, partition)
    job_qos = limits.qos.get(qos or (assoc[1] if assoc else None) or "")
    part_qos = limits.qos.get(partition_qos or "")
    if part_qos is not None:
        part_qos = replace(part_qos, source=f"partition {partition}'s QOS '{partition_qos}'",
                           scope=("partition", partition or ""))
    if job_qos is not None and partition_qos == job_qos.scope[1]:
        job_qos = None  # the same QOS twice: Slurm applies it once
    levels = [job_qos, part_qos] if job_qos and "OverPartQOS" in job_qos.flags else [part_qos, job_qos]
    return _shadowed([x for x in levels if x is not None] + ([assoc[0]] if assoc else []))


def _shadowed(levels: Sequence[Limits]) -> List[Limits]:
    """Each level without the per-job and per-user limits that a level before it sets ("the point in
    this list where the limit is first defined will be used"); Grp* limits are all kept."""
    out: List[Limits] = []
    seen_tres: Dict[str, set] = {"max_tres": set(), "max_tres_per_user": set()}
    seen: set = set()
    for lim in levels:
        kept = replace(lim, **{k: {n: v for n, v in getattr(lim, k).items() if n not in seen_tres[k]}
                               for k in seen_tres},
                       **{k: None if k in seen else getattr(lim, k) for k in ("max_wall_min", "max_submit", "max_jobs")})
        for k in seen_tres:
            seen_tres[k] |= set(getattr(lim, k))
        seen |= {k for k in ("max_wall_min", "max_submit", "max_jobs") if getattr(lim, k) is not None}
        out.append(kept)
    return out


def limit_problems(tres: Dict[str, int], time_min: Optional[int], held_to: Sequence[Limits]) -> List[Tuple[str, str]]:
    """(resources key, message) for each limit one array task (`tres`, `time_min`; None: UNLIMITED) is
    over; the message names the limit and where it comes from. Such a job pends forever."""
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
                                     f"{name}={cap}{unit}: the job would pend forever ({lim.command})"))
        if lim.max_wall_min is not None and (time_min is None or time_min > lim.max_wall_min):
            asked = "no time limit" if time_min is None else f"{time_min} min"
            out.append(("time", f"{asked} is over {lim.source} MaxWall ({lim.max_wall_min} min): the job would "
                                f"pend forever ({lim.command})"))
    return out


def counts_toward(lim: Limits, job: QueuedJob) -> bool:
    """Whether a queued job counts toward `lim`'s job counts (an approximation where sites nest
    accounts: the user's jobs only, matched by QOS, partition, or account and partition)."""
    what = lim.scope[0] if lim.scope else ""
    if what == "qos":
        return job.qos == lim.scope[1]
    if what == "partition":
        return lim.scope[1] in job.partition.split(",")
    if what == "account":
        return job.account == lim.scope[1] and (not lim.scope[2] or lim.scope[2] in job.partition.split(","))
    return False


def submit_problem(lim: Limits, run_tasks: int, queued: Optional[Iterable[QueuedJob]]) -> Optional[str]:
    """Why sbatch would refuse a part of a run that queues `run_tasks` array tasks under `lim` (each one
    counts as a job), with the user's jobs already queued that count toward it (`queued`: None when
    not asked); None when it fits."""
    mine = sum(1 for j in queued if counts_toward(lim, j)) if queued is not None else 0
    for label, cap in (("MaxSubmitJobsPerUser" if lim.scope[:1] != ("account",) else "MaxSubmitJobs", lim.max_submit),
                       ("GrpSubmitJobs", lim.grp_submit)):
        if cap is not None and run_tasks + mine > cap:
            held = f" and {mine} job(s) of yours already queued count toward it" if mine else ""
            return (f"the run would queue {run_tasks} array task(s) (each one counts as a job){held}: "
                    f"{run_tasks + mine} is over {lim.source} {label}={cap}; sbatch would refuse a part of it "
                    f"({lim.command})")
    return None


def running_warning(lim: Limits, stages: Sequence[Tuple[str, int]]) -> Optional[str]:
    """A warning when a stage (name, tasks that may run at once) has more tasks than `lim` lets run at
    once (MaxJobs per user, GrpJobs): the others wait, so the run is slower, not refused. None when no
    stage has."""
    assoc = lim.scope[:1] == ("account",)
    for label, cap, reason in (("MaxJobs" if assoc else "MaxJobsPerUser", lim.max_jobs,
                                "AssocMaxJobsLimit" if assoc else "QOSMaxJobsPerUserLimit"),
                               ("GrpJobs", lim.grp_jobs, "AssocGrpJobsLimit" if assoc else "QOSGrpJobsLimit")):
        over = [f"{name} ({n} at once)" for name, n in stages if cap is not None and n > cap]
        if over:
            return (f"{lim.source} {label}={cap}: at most {cap} job(s) run at once, so the tasks of "
                    f"{', '.join(over)} beyond that wait (squeue reason {reason}); the run takes longer")
    return None
