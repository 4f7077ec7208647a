"""Job states from Slurm's accounting and queue (`sacct -X -n -P -o JobID,State,Reason`, `squeue -h -r -t
all -o %i|%T|%r`) and the user's associations (`sacctmgr show assoc`): parsers only (client.py runs the calls).
Lines of another shape (a site's banner) are ignored."""
from __future__ import annotations

import re
from typing import Dict, List

from launcher.answer import Answer
from launcher.sbatch.arrays import expand

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
    "STOPPED": "running",
}
# A job (or array task) id as sacct -X and squeue -r print it: 12, 12_3, 12_[4-7%2] (pending tasks not
# yet split off), 12+0 (heterogeneous component: not ours, never matched as an array task).
JOB_ID = re.compile(r"^(\d+)(?:_(\d+|\[[0-9,:%\-]+\]))?$")
_STATE = re.compile(r"^[A-Z_]+$")
# What squeue/sacct print for "no reason" (job_reason_string(WAIT_NO_REASON) is "None").
_NO_REASON = {"", "None", "(null)"}
# The status query's formats: the task state and why it is in that state (squeue(1) %r; sacct(1) Reason).
SACCT_FORMAT = "JobID,State,Reason"
SQUEUE_FORMAT = "%i|%T|%r"


def _job_states(text: str) -> Answer:
    """Lines `<job id>|<STATE>[ by <uid>][|<Reason>]` → Answer ({array job id: {array index: task
    state}}, with the reasons). Lines of another shape (a site's banner) are ignored; so are jobs that
    are not array tasks (we only submit arrays). A reason of None ('None', '(null)', empty) is left out."""
    out = Answer()
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) not in (2, 3) or not fields[1]:
            continue
        m = JOB_ID.match(fields[0])
        word = fields[1].split()[0]
        if not m or not _STATE.match(word) or m.group(2) is None:
            continue
        base, idx = m.group(1), m.group(2)
        state = STATE_MAP.get(word, "pending")
        reason = fields[2].strip() if len(fields) == 3 else ""
        for i in expand(idx) if idx.startswith("[") else [int(idx)]:
            out.setdefault(base, {})[i] = state
            if reason not in _NO_REASON:
                out.reasons.setdefault(base, {})[i] = reason
    return out


def parse_sacct(text: str) -> Answer:
    """`sacct -X -n -P -o JobID,State,Reason` → {array job id: {array index: task state}} (an Answer).
    Pending array tasks not yet split off appear as one line `123_[4-7%2]`. sacct's Reason is "the last
    reason a job was blocked from running for something other than Priority or Resources" (sacct(1)):
    kept, but a pending task's live reason comes from squeue (Slurm.query)."""
    return _job_states(text)


def parse_squeue(text: str) -> Answer:
    """`squeue -h -r -t all -o %i|%T|%r` → {array job id: {array index: task state}} (an Answer, with
    each task's reason: why a pending task waits, e.g. Priority, Resources, Dependency). `-r` lists each
    pending array task on its own line; `-t all` keeps jobs that ended less than MinJobAge ago."""
    return _job_states(text)


def node_failed(text: str) -> set:
    """Job ids of `sacct -X -n -P` lines whose state is NODE_FAIL (the node died under the task)."""
    out = set()
    for line in text.splitlines():
        fields = line.strip().split("|")
        m = JOB_ID.match(fields[0]) if len(fields) > 1 else None
        if m and fields[1].startswith("NODE_FAIL"):
            out.add(m.group(1))
    return out


def merge_answers(base: Answer, live: Answer) -> Answer:
    """sacct's answer with squeue's laid over it, task by task: for a task squeue lists, slurmctld's
    state and reason win (accounting lags it; a reason squeue does not give is dropped, not left stale)."""
    out = Answer({j: dict(t) for j, t in base.items()}, {j: dict(r) for j, r in base.reasons.items()})
    for job, tasks in live.items():
        for i, state in tasks.items():
            out.setdefault(job, {})[i] = state
            reason = live.reasons.get(job, {}).get(i)
            if reason:
                out.reasons.setdefault(job, {})[i] = reason
            else:
                out.reasons.get(job, {}).pop(i, None)
    return out


def parse_job_words(text: str) -> Dict[str, List[str]]:
    """Lines `<job id>|<STATE>[ by <uid>]` of any job, array or not → {job id: [STATE of each line]}
    (an array job: one per task line). Lines of another shape are ignored."""
    out: Dict[str, List[str]] = {}
    for line in text.splitlines():
        fields = line.strip().split("|")
        m = JOB_ID.match(fields[0]) if len(fields) == 2 and fields[1] else None
        word = fields[1].split()[0] if m else ""
        if m and _STATE.match(word):
            out.setdefault(m.group(1), []).append(word)
    return out


def parse_associations(text: str) -> tuple[set, set]:
    """`sacctmgr -n -P show assoc format=Account,QOS` → (accounts, qos names); other lines ignored."""
    accounts, qos = set(), set()
    name = re.compile(r"^[A-Za-z0-9_.\-]+$")
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 2 or not name.match(fields[0]):
            continue
        names = [x for x in fields[1].split(",") if x]
        if not all(name.match(x) for x in names):
            continue
        accounts.add(fields[0])
        qos.update(names)
    return accounts, qos
