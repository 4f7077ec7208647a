"""Talking to Slurm: submit with `sbatch --parsable`, one batched `sacct` per status (`squeue` where
accounting is disabled, or for jobs sacct does not know), one `scancel`, and the cluster facts
preflight needs (three `scontrol` calls; reservations are a fourth, made only when asked for:
`Slurm.reservations`).

Sites wrap the clients (account balance lines, banners, notices), so every parser here reads only the
lines that have its expected shape and ignores the rest: an sbatch that prints a notice still yields
its job id, and a banner above `sacct` output is never read as a job."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional

from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

from launcher.arrays import expand
from launcher.errors import LauncherError, SubmissionError
from launcher.slurm_values import parse_time_min

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
_JOB_ID = re.compile(r"^(\d+)(?:_(\d+|\[[0-9,:%\-]+\]))?$")
_STATE = re.compile(r"^[A-Z_]+$")
# `sbatch --parsable`: "<jobid>" or "<jobid>;<cluster>" (sbatch(1), --parsable).
_PARSABLE = re.compile(r"^(\d+)(?:;\S+)?$")
# The controller's answer to `squeue -j` when it knows none of the ids (slurm_strerror(ESLURM_INVALID_JOB_ID)).
_INVALID_JOB_ID = "Invalid job id specified"
# sacct where AccountingStorageType=accounting_storage/none.
_ACCOUNTING_DISABLED = "accounting storage is disabled"
# Status queries (sacct, squeue) are read-only: retried on a failure or a timeout, with backoff, so a
# controller that is busy for a moment does not fail `launcher status`. sbatch is never retried: a
# submission that timed out may have queued its job (see Slurm.submit).
QUERY_ATTEMPTS = 3


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
    # AccountingStorageType is not accounting_storage/none: sacct can answer (None: not said)
    accounting: Optional[bool] = None

    @property
    def default_partition(self) -> Optional[str]:
        return next((p.name for p in self.partitions.values() if p.default), None)


class SlurmCommandError(LauncherError):
    """A Slurm client exited non-zero or did not answer in time."""

    def __init__(self, argv: List[str], returncode: Optional[int], stdout: str, stderr: str):
        self.argv, self.returncode, self.stdout, self.stderr = argv, returncode, stdout, stderr
        what = "did not answer in time" if returncode is None else f"failed ({returncode})"
        super().__init__(f"`{' '.join(argv[:3])} ...` {what}: {stderr.strip() or stdout.strip()}")


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
                                state=d.get("State", ""), nodes=[n for n in node_list if name in n.partitions])
    jc = re.search(r"^MaxJobCount\s*=\s*(\d+)", config, re.M)
    acct = re.search(r"^AccountingStorageType\s*=\s*(\S+)", config, re.M)
    return ClusterInfo(max_array_size=int(m.group(1)) if m else 1001, partitions=parts,
                       max_job_count=int(jc.group(1)) if jc else None,
                       accounting=None if acct is None else acct.group(1) != "accounting_storage/none")


def _job_states(text: str) -> Dict[str, Dict[int, str]]:
    """Lines `<job id>|<STATE>[ by <uid>]` → {array job id: {array index: task state}}. Lines of another
    shape (a site's banner) are ignored; so are jobs that are not array tasks (we only submit arrays)."""
    out: Dict[str, Dict[int, str]] = {}
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 2 or not fields[1]:
            continue
        m = _JOB_ID.match(fields[0])
        word = fields[1].split()[0]
        if not m or not _STATE.match(word) or m.group(2) is None:
            continue
        base, idx = m.group(1), m.group(2)
        state = STATE_MAP.get(word, "pending")
        for i in expand(idx) if idx.startswith("[") else [int(idx)]:
            out.setdefault(base, {})[i] = state
    return out


def parse_sacct(text: str) -> Dict[str, Dict[int, str]]:
    """`sacct -X -n -P -o JobID,State` → {array job id: {array index: task state}}.
    Pending array tasks not yet split off appear as one line `123_[4-7%2]`."""
    return _job_states(text)


def parse_squeue(text: str) -> Dict[str, Dict[int, str]]:
    """`squeue -h -r -t all -o %i|%T` → {array job id: {array index: task state}}. `-r` lists each
    pending array task on its own line; `-t all` keeps jobs that ended less than MinJobAge ago."""
    return _job_states(text)


def parse_job_words(text: str) -> Dict[str, List[str]]:
    """Lines `<job id>|<STATE>[ by <uid>]` of any job, array or not → {job id: [STATE of each line]}
    (an array job: one per task line). Lines of another shape are ignored."""
    out: Dict[str, List[str]] = {}
    for line in text.splitlines():
        fields = line.strip().split("|")
        m = _JOB_ID.match(fields[0]) if len(fields) == 2 and fields[1] else None
        word = fields[1].split()[0] if m else ""
        if m and _STATE.match(word):
            out.setdefault(m.group(1), []).append(word)
    return out


def parse_sbatch(stdout: str) -> Optional[str]:
    """The job id `sbatch --parsable` printed: its last line, `<jobid>` or `<jobid>;<cluster>`. None
    when the last line is something else (a site's wrapper printed a notice after it)."""
    lines = [x.strip() for x in stdout.splitlines() if x.strip()]
    m = _PARSABLE.match(lines[-1]) if lines else None
    return m.group(1) if m else None


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


def _transient(e: BaseException) -> bool:
    """Worth asking again: a client that failed or timed out, except for the answers that are final."""
    if not isinstance(e, SlurmCommandError):
        return False
    text = e.stderr + e.stdout
    return _ACCOUNTING_DISABLED not in text and _INVALID_JOB_ID not in text


class Slurm:
    """The Slurm clients. `calls` counts each client's runs (benchmarks and tests assert on it)."""

    # A job that neither sacct nor squeue knows is lost only this long after its submission. slurmctld
    # knows a job before sbatch returns, and keeps an ended one for MinJobAge (default 300 s) after it
    # ends; slurmdbd learns it a moment later (seconds; longer when slurmdbd is busy or down). So a
    # fresh job sacct does not report yet is taken as pending without another query; an older one is
    # asked of squeue before it counts as lost.
    lost_grace_s = 120.0

    def __init__(self, cluster: dict, accounting: Optional[bool] = None):
        # Inside an salloc/sbatch allocation the shell carries SLURM_* variables (job id, node list,
        # memory, tasks) that sbatch would read as options of the new job: drop them, keep SLURM_CONF.
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") or k == "SLURM_CONF"}
        # SBATCH_* input variables (sbatch(1), INPUT ENVIRONMENT VARIABLES) override the script's
        # #SBATCH lines: SBATCH_PARTITION=debug would send a job preflight checked against another
        # partition. Dropped too, so what preflight checked is what sbatch reads; `dropped` names them
        # for the warning `launcher run` prints (site defaults belong in the profile: cluster.resources).
        self.dropped = sorted(k for k in self.env if k.startswith("SBATCH_"))
        for k in self.dropped:
            del self.env[k]
        if cluster.get("slurm_conf") and "SLURM_CONF" not in os.environ:
            self.env["SLURM_CONF"] = cluster["slurm_conf"]
        self.calls: Dict[str, int] = {}  # how many times each client ran (benchmarks assert on it)
        self._limits = None  # Slurm.limits, asked once
        # False: the cluster has no accounting (recorded in run.json at launch): status asks squeue only.
        self.accounting = accounting

    def _run(self, argv: List[str], timeout: float = 60) -> str:
        """Run a client once; its stdout. SlurmCommandError when it fails or times out."""
        self.calls[argv[0]] = self.calls.get(argv[0], 0) + 1
        if shutil.which(argv[0], path=self.env.get("PATH")) is None:
            raise LauncherError(f"`{argv[0]}` not found: is this a Slurm login node? (cluster=local runs without Slurm)")
        try:
            p = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise SlurmCommandError(argv, None, _text(e.stdout), _text(e.stderr) or f"no answer in {timeout:.0f} s") from e
        if p.returncode != 0:
            raise SlurmCommandError(argv, p.returncode, p.stdout, p.stderr)
        return p.stdout

    @retry(retry=retry_if_exception(_transient), stop=stop_after_attempt(QUERY_ATTEMPTS),
           wait=wait_exponential(multiplier=1, max=8), reraise=True)
    def _query(self, argv: List[str], timeout: float = 60) -> str:
        """A read-only client call (sacct, squeue, scontrol, sacctmgr), retried when it fails for a moment."""
        return self._run(argv, timeout)

    def info(self) -> ClusterInfo:
        return parse_cluster_info(self._query(["scontrol", "show", "config"]),
                                  self._query(["scontrol", "-o", "show", "partition"]),
                                  self._query(["scontrol", "-o", "show", "node"]))

    def srun_help(self) -> str:
        """`srun --help`: SPANK plugins add their options there (pyxis: --container-image)."""
        return self._run(["srun", "--help"])

    def reservations(self) -> Dict[str, Reservation]:
        """Advanced reservations (one `scontrol` call). Not part of `info()`: preflight makes the call
        only when a stage names a reservation (resources.reservation)."""
        return parse_reservations(self._run(["scontrol", "-o", "show", "reservation"]))

    def associations(self, user: str) -> tuple[set, set]:
        """(accounts, qos names) the user may submit with."""
        return parse_associations(self._query(["sacctmgr", "-n", "-P", "show", "assoc", f"user={user}",
                                               "format=Account,QOS"]))

    def limits(self, user: str):
        """The QOS and association limits `user` is held to (launcher/slurm_limits.py): two `sacctmgr`
        calls, made once per Slurm object."""
        from launcher import slurm_limits

        if self._limits is None:
            self._limits = slurm_limits.parse_limits(
                self._query(["sacctmgr", "-n", "-P", "show", "qos", f"format={slurm_limits.QOS_FORMAT}"]),
                self._query(["sacctmgr", "-n", "-P", "show", "assoc", f"user={user}",
                             f"format={slurm_limits.ASSOC_FORMAT}"]))
        return self._limits

    def submit(self, script: Path, dependency: Optional[str]) -> str:
        """Queue `script`; its job id. Never retried. When sbatch exits 0 the id is its `--parsable`
        answer; when that cannot be read (a wrapper printed something after it), the job is found by its
        script path with one squeue call. When sbatch fails (or does not answer), squeue is asked too:
        a wrapper may fail after the real sbatch queued the job, and a timed-out sbatch may have queued
        it. SubmissionError.queued names any job found that way, so the caller cancels and records it."""
        argv = ["sbatch", "--parsable", "--kill-on-invalid-dep=yes"]
        if dependency:
            argv.append(f"--dependency={dependency}")
        try:
            out = self._run(argv + [str(script)])
        except SlurmCommandError as e:
            try:
                queued = self._queued_by(script, what="after the failed sbatch")
            except SubmissionError as lookup:
                raise SubmissionError(f"{e}\n{lookup}") from e
            raise SubmissionError(str(e), queued=queued) from e
        job_id = parse_sbatch(out)
        if job_id:
            return job_id
        found = self._queued_by(script, what=f"after sbatch printed no job id ({out.strip()[-200:]!r})")
        if len(found) == 1:
            return found[0]
        raise SubmissionError(
            f"sbatch exited 0 but printed no job id (output {out.strip()[-200:]!r}), and "
            + (f"no job of {script} is queued" if not found else f"{len(found)} jobs of {script} are queued: "
               f"{', '.join(found)}"), queued=found)

    def _queued_by(self, script: Path, what: str) -> List[str]:
        """Job ids whose batch script is `script` (squeue's %o, the command), from one squeue call of
        this user's jobs with the script's job name (in every state slurmctld still holds)."""
        name = _job_name(script)
        argv = ["squeue", "-h", "-t", "all", "-u", str(os.getuid()), "-o", "%i|%o"] + ([f"--name={name}"] if name else [])
        try:
            out = self._query(argv)
        except SlurmCommandError as e:
            raise SubmissionError(f"could not check whether a job of {script} was queued {what}: {e}; "
                                  f"look for it with `squeue --name={name}`") from e
        ids = []
        for line in out.splitlines():
            jid, _, command = line.strip().partition("|")
            m = _JOB_ID.match(jid)
            if m and command == str(script) and m.group(1) not in ids:
                ids.append(m.group(1))
        return ids

    def query(self, job_ids: Iterable[str], settled: Iterable[str] = ()) -> Dict[str, Dict[int, str]]:
        """Task states of array jobs: {job id: {array index: state}}; a job the scheduler does not know
        is absent. One sacct call. Jobs in `settled` (submitted longer than lost_grace_s ago) that sacct
        does not report are asked of squeue (a second call, only then). Without accounting (sacct says
        it is disabled, or run.json says so): one squeue call."""
        ids = sorted(set(job_ids), key=int)
        if not ids:
            return {}
        if self.accounting is not False:
            try:
                out = parse_sacct(self._query(["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(ids)]))
            except SlurmCommandError as e:
                if _ACCOUNTING_DISABLED not in e.stderr + e.stdout:
                    raise
                self.accounting = False
            else:
                unknown = sorted(set(settled) & set(ids) - set(out), key=int)
                return {**out, **self._squeue(unknown)} if unknown else out
        return self._squeue(ids)

    def usage(self, job_ids: Iterable[str]) -> Dict[str, list]:
        """What the jobs used, {job or array task id: [accounting.Attempt, oldest first]}: ONE sacct call
        over every id (--duplicates: the earlier attempts of requeued jobs too, with their steps; the
        fields launcher/accounting.py reads). LauncherError when the cluster keeps no accounting."""
        from launcher.accounting import SACCT_FIELDS, parse_usage

        ids = sorted(set(job_ids), key=int)
        if not ids:
            return {}
        try:
            text = self._query(["sacct", "-n", "-P", "--duplicates", "-o", ",".join(SACCT_FIELDS), "-j", ",".join(ids)])
        except SlurmCommandError as e:
            if _ACCOUNTING_DISABLED in e.stderr + e.stdout:
                raise LauncherError("`launcher usage` needs Slurm's accounting: sacct says accounting storage is "
                                    "disabled on this cluster (AccountingStorageType)") from e
            raise
        return parse_usage(text)

    def job_states(self, job_ids: Iterable[str]) -> Dict[str, tuple]:
        """Jobs outside the run (any user's, array or not): {job id: (its STATE words, whether slurmctld
        still holds it)}. One squeue call; one sacct call for the ids it does not hold (ended longer than
        MinJobAge ago), where accounting is kept. A job neither knows is absent."""
        ids = sorted(set(job_ids), key=int)
        if not ids:
            return {}
        try:
            held = parse_job_words(self._query(["squeue", "-h", "-t", "all", "-o", "%i|%T", "-j", ",".join(ids)]))
        except SlurmCommandError as e:
            if _INVALID_JOB_ID not in e.stderr + e.stdout:  # it knows none of them
                raise
            held = {}
        rest, ended = [i for i in ids if i not in held], {}
        if rest and self.accounting is not False:
            try:
                ended = parse_job_words(self._query(["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(rest)]))
            except SlurmCommandError as e:
                if _ACCOUNTING_DISABLED not in e.stderr + e.stdout:
                    raise
        return {**{j: (w, False) for j, w in ended.items() if j in rest}, **{j: (w, True) for j, w in held.items()}}

    def _squeue(self, ids: List[str]) -> Dict[str, Dict[int, str]]:
        """States of the jobs slurmctld still holds (pending, running, or ended under MinJobAge ago)."""
        if not ids:
            return {}
        try:
            return parse_squeue(self._query(["squeue", "-h", "-r", "-t", "all", "-o", "%i|%T", "-j", ",".join(ids)]))
        except SlurmCommandError as e:
            if _INVALID_JOB_ID in e.stderr + e.stdout:  # it knows none of them
                return {}
            raise

    def cancel(self, job_ids: Iterable[str]) -> None:
        ids = sorted(set(job_ids))
        if ids:
            self._run(["scancel", *ids])


def _text(b) -> str:
    return b.decode(errors="replace") if isinstance(b, bytes) else (b or "")


def _job_name(script: Path) -> Optional[str]:
    """The --job-name directive of a batch script we rendered (narrows the squeue lookup)."""
    import shlex

    try:
        m = re.search(r"^#SBATCH --job-name=(.+)$", Path(script).read_text(), re.M)
        return shlex.split(m.group(1))[0] if m else None
    except (OSError, ValueError, IndexError):
        return None
