"""What a run's jobs really used, from Slurm's accounting (one `sacct` call) or the local scheduler's
records: pure parsing and arithmetic, no client call here (launcher/slurm.py Slurm.usage asks sacct,
launcher/local.py Local.usage reads the local driver's state).

The arithmetic is seff's (Slurm's contribs/seff/seff, Princeton Research Computing, the efficiency
report Slurm ships), applied per attempt of a job or array task:
- CPU time used: the sum of TotalCPU over the job's steps (seff: tot_cpu_sec + tot_cpu_usec of every
  step); CPU efficiency = CPU time used / (Elapsed x AllocCPUS), seff's "core-walltime";
- memory used: the largest, over the job's steps, of the step's TRESUsageInTot mem (seff: "TRES_MEM in
  tres_usage_in_tot is the sum of memory peaks of all tasks"), the step's MaxRSS where sacct has no TRES
  usage; memory efficiency = memory used / the job's allocated memory (AllocTRES mem, seff's
  tres_alloc_str);
- and beyond seff: GPU-hours = AllocTRES gres/gpu x Elapsed, allocated CPU-hours = AllocCPUS x Elapsed.

A requeued job keeps its id: `sacct --duplicates` lists its earlier attempts as records of their own
(state REQUEUED, PREEMPTED, NODE_FAIL...), oldest first. Every attempt's allocation counts in the
totals; the earlier attempts are also counted as requeues, their elapsed time as the time requeues
cost (what ran past their last checkpoint is lost; a training that checkpointed kept the rest).
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Dict, List, Optional

# The sacct fields Slurm.usage asks for, in this order (-P: '|'-separated, one record per line).
SACCT_FIELDS = ("JobID", "State", "ElapsedRaw", "AllocCPUS", "TotalCPU", "AllocTRES", "TRESUsageInTot", "MaxRSS",
                "Start", "Submit")
# A job (12), an array task (12_3) or a heterogeneous component (12+0), then an optional step (.batch, .0).
_JOB = re.compile(r"^(\d+(?:_\d+|\+\d+)?)(?:\.(.+))?$")
# sacct's sizes: a number and a unit (K, M, G, T, P: powers of 1024); a bare number is bytes.
_SIZE = re.compile(r"^([\d.]+)([KMGTP]?)$")
_UNITS = {"": 1, "K": 1024, "M": 1024 ** 2, "G": 1024 ** 3, "T": 1024 ** 4, "P": 1024 ** 5}


@dataclass
class Attempt:
    """One run of a job or array task: sacct's job record and its steps, or one local attempt.
    Times in seconds, sizes in bytes; None where the source has no value."""

    job: str  # "12_3" (array task) or "12"
    state: str
    elapsed_s: float
    cpus: int
    gpus: int = 0
    mem_alloc: Optional[int] = None
    cpu_used_s: Optional[float] = None
    mem_used: Optional[int] = None
    start: str = ""
    submit: str = ""  # sacct's Submit (local time, ISO): an older job that had the same id is told apart by it


def parse_duration(text: str) -> Optional[float]:
    """sacct's TotalCPU/Elapsed: [DD-][HH:]MM:SS[.mmm] -> seconds; None for an empty or odd value."""
    text = (text or "").strip()
    days, _, rest = text.rpartition("-") if "-" in text else ("0", "", text)
    parts = rest.split(":")
    try:
        nums = [float(p) for p in parts]
        d = int(days or 0)
    except ValueError:
        return None
    if not 1 <= len(nums) <= 3:
        return None
    while len(nums) < 3:
        nums.insert(0, 0.0)
    return d * 86400 + nums[0] * 3600 + nums[1] * 60 + nums[2]


def parse_size(text: str) -> Optional[int]:
    """'3G', '1008K', '2.50M', '4096' (bytes) -> bytes; None for an empty or odd value."""
    m = _SIZE.match((text or "").strip())
    return int(float(m.group(1)) * _UNITS[m.group(2)]) if m else None


def parse_tres(text: str) -> Dict[str, str]:
    """'billing=2,cpu=2,gres/gpu=1,mem=4G,node=1' -> {name: value}."""
    return dict(item.split("=", 1) for item in (text or "").split(",") if "=" in item)


def tres_gpus(tres: Dict[str, str]) -> int:
    """GPUs of an AllocTRES: gres/gpu=N, else the sum of the typed gres/gpu:<type>=N entries."""
    if "gres/gpu" in tres:
        return int(float(tres["gres/gpu"]))
    return sum(int(float(v)) for k, v in tres.items() if k.startswith("gres/gpu:"))


def _int(text: str) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        return 0


def parse_usage(text: str) -> Dict[str, List[Attempt]]:
    """`sacct -n -P -D -o <SACCT_FIELDS>` -> {job or array task id: its attempts, oldest first}.

    A record without a step suffix starts an attempt; the step records after it (.batch, .extern, .0,
    ...) with the same id belong to it. Lines of another shape (a site's banner), pending array ranges
    (12_[3-7]) and steps with no attempt before them are ignored."""
    out: Dict[str, List[Attempt]] = {}
    steps: Dict[int, List[List[str]]] = {}
    for line in text.splitlines():
        f = line.split("|")
        if len(f) < len(SACCT_FIELDS):
            continue
        m = _JOB.match(f[0].strip())
        if not m:
            continue
        job, step = m.group(1), m.group(2)
        if step is None:
            tres = parse_tres(f[5])
            a = Attempt(job=job, state=f[1].split()[0] if f[1].strip() else "", elapsed_s=float(_int(f[2])),
                        cpus=_int(f[3]), gpus=tres_gpus(tres), mem_alloc=parse_size(tres.get("mem", "")),
                        cpu_used_s=parse_duration(f[4]), start=f[8].strip(), submit=f[9].strip())
            out.setdefault(job, []).append(a)
            steps[id(a)] = []
        elif out.get(job):
            steps[id(out[job][-1])].append(f)
    for attempts in out.values():
        for a in attempts:
            _add_steps(a, steps[id(a)])
        attempts.sort(key=lambda a: (not a.start[:1].isdigit(), a.start))  # Unknown/None starts last
    return out


def submitted_at(a: Attempt) -> Optional[float]:
    """The attempt's Submit as Unix time (sacct prints local time), None when unknown."""
    try:
        return time.mktime(time.strptime(a.submit, "%Y-%m-%dT%H:%M:%S"))
    except (ValueError, OverflowError):
        return None


def since(attempts: Dict[str, List[Attempt]], submitted: Dict[str, float],
          slack_s: float = 300) -> Dict[str, List[Attempt]]:
    """Only the attempts of the jobs the run submitted: `sacct --duplicates` also lists an older job
    that had the same id (ids restart after a controller lost its state, or wrap at MaxJobId). An attempt
    submitted more than `slack_s` before its array job's ledger record (`submitted`: array job id ->
    Unix time; clocks of login node and controller differ a little) is not ours. A requeued attempt
    keeps its job's Submit, so it stays."""
    out = {}
    for job, found in attempts.items():
        t0 = submitted.get(re.split(r"[_+]", job)[0])
        kept = [a for a in found if t0 is None or (submitted_at(a) or t0) >= t0 - slack_s]
        if kept:
            out[job] = kept
    return out


def _add_steps(a: Attempt, steps: List[List[str]]) -> None:
    """seff over the attempt's steps: CPU time summed, memory the largest step's (TRESUsageInTot mem,
    else MaxRSS). Without step records the job record's own TotalCPU stays."""
    if not steps:
        return
    cpu = [parse_duration(f[4]) for f in steps]
    a.cpu_used_s = sum(c for c in cpu if c is not None)
    mems = [parse_size(parse_tres(f[6]).get("mem", "")) or parse_size(f[7]) for f in steps]
    mems = [m for m in mems if m is not None]
    a.mem_used = max(mems) if mems else None


def summarize(attempts_by_job: Dict[str, List[Attempt]]) -> Dict[str, object]:
    """Totals of some jobs' attempts (a stage's; every stage's merged for the run's total): elapsed_s (summed over tasks and attempts), cpu_hours and
    gpu_hours (allocated x elapsed), cpu_used_hours, cpu_efficiency and mem_efficiency (0..1, None when
    nothing to divide by: seff's ratios over the summed numerators and denominators), mem_peak (bytes,
    the largest attempt's), tasks, attempts, requeues (earlier attempts) and requeue_lost_s (their
    elapsed time)."""
    every = [a for attempts in attempts_by_job.values() for a in attempts]
    earlier = [a for attempts in attempts_by_job.values() for a in attempts[:-1]]
    core_s = sum(a.cpus * a.elapsed_s for a in every)
    cpu_used = [a for a in every if a.cpu_used_s is not None]
    with_mem = [a for a in every if a.mem_used is not None and a.mem_alloc]
    alloc = sum(a.mem_alloc for a in with_mem)
    return {
        "tasks": len(attempts_by_job), "attempts": len(every),
        "elapsed_s": round(sum(a.elapsed_s for a in every), 3),
        "cpu_hours": round(core_s / 3600, 6),
        "gpu_hours": round(sum(a.gpus * a.elapsed_s for a in every) / 3600, 6),
        "cpu_used_hours": round(sum(a.cpu_used_s for a in cpu_used) / 3600, 6),
        "cpu_efficiency": round(sum(a.cpu_used_s for a in cpu_used) / core_s, 4) if core_s and cpu_used else None,
        "mem_efficiency": round(sum(a.mem_used for a in with_mem) / alloc, 4) if alloc else None,
        "mem_peak": max((a.mem_used for a in every if a.mem_used is not None), default=None),
        "requeues": len(earlier), "requeue_lost_s": round(sum(a.elapsed_s for a in earlier), 3),
    }
