"""Talking to Slurm: the one place that runs its clients (with the environment cleaned of an enclosing
allocation's SLURM_* and of SBATCH_* overrides). Submit with `sbatch --parsable`, one batched `sacct`
per status (`squeue` where accounting is disabled, or for jobs sacct does not know), one `scancel`, and
the cluster facts preflight needs (three `scontrol` calls, parsed in facts.py; reservations are a
fourth, made only when asked for: `Slurm.reservations`). Job states are parsed in accounting.py. A
status asks squeue as a second call only for the jobs sacct says have pending tasks (their live Reason
only slurmctld knows) or does not know at all.

Sites wrap the clients (account balance lines, banners, notices), so every parser here reads only the
lines that have its expected shape and ignores the rest: an sbatch that prints a notice still yields
its job id, and a banner above `sacct` output is never read as a job."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, Iterable, List, Optional

from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

from launcher.errors import LauncherError, SchedulerUnavailable, SubmissionError
from launcher.answer import Answer
from launcher.slurm.accounting import (JOB_ID, SACCT_FORMAT, SQUEUE_FORMAT, merge_answers, node_failed, parse_associations,
                                       parse_job_words, parse_sacct, parse_squeue)
from launcher.slurm.facts import ClusterInfo, Reservation, parse_cluster_info, parse_reservations

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


class SlurmCommandError(SchedulerUnavailable):
    """A Slurm client exited non-zero or did not answer in time (exit 69: Slurm unavailable)."""

    def __init__(self, argv: List[str], returncode: Optional[int], stdout: str, stderr: str):
        self.argv, self.returncode, self.stdout, self.stderr = argv, returncode, stdout, stderr
        what = "did not answer in time" if returncode is None else f"failed ({returncode})"
        super().__init__(f"`{' '.join(argv[:3])} ...` {what}: {stderr.strip() or stdout.strip()}")


def parse_sbatch(stdout: str) -> Optional[str]:
    """The job id `sbatch --parsable` printed: its last line, `<jobid>` or `<jobid>;<cluster>`. None
    when the last line is something else (a site's wrapper printed a notice after it)."""
    lines = [x.strip() for x in stdout.splitlines() if x.strip()]
    m = _PARSABLE.match(lines[-1]) if lines else None
    return m.group(1) if m else None


def client_env(slurm_conf: Optional[str] = None) -> Dict[str, str]:
    """The environment every Slurm client runs with (sbatch, sacct, squeue, scontrol, sacctmgr, scrontab).
    Inside an salloc/sbatch allocation the shell carries SLURM_* variables (job id, node list, memory,
    tasks) that sbatch would read as options of the new job: dropped, SLURM_CONF kept. SLURM_CONF from
    the profile (`slurm_conf`) unless the caller's shell sets one."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") or k == "SLURM_CONF"}
    if slurm_conf and "SLURM_CONF" not in os.environ:
        env["SLURM_CONF"] = slurm_conf
    return env


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
        self.env = client_env(cluster.get("slurm_conf"))
        # SBATCH_* input variables (sbatch(1), INPUT ENVIRONMENT VARIABLES) override the script's
        # #SBATCH lines: SBATCH_PARTITION=debug would send a job preflight checked against another
        # partition. Dropped too, so what preflight checked is what sbatch reads; `dropped` names them
        # for the warning `launcher run` prints (site defaults belong in the profile: cluster.resources).
        self.dropped = sorted(k for k in self.env if k.startswith("SBATCH_"))
        for k in self.dropped:
            del self.env[k]
        self.calls: Dict[str, int] = {}  # how many times each client ran (benchmarks assert on it)
        self._count_lock = threading.Lock()
        self._limits = None  # Slurm.limits, asked once
        self._queued = None  # Slurm.queued, asked once
        self._cluster_name: Optional[str] = None  # from info(): which associations are this cluster's
        # False: the cluster has no accounting (recorded in run.json at launch): status asks squeue only.
        self.accounting = accounting

    def _run(self, argv: List[str], timeout: float = 60) -> str:
        """Run a client once; its stdout. SlurmCommandError when it fails or times out."""
        with self._count_lock:  # limits() runs two clients at once
            self.calls[argv[0]] = self.calls.get(argv[0], 0) + 1
        if shutil.which(argv[0], path=self.env.get("PATH")) is None:
            raise SchedulerUnavailable(f"`{argv[0]}` not found: is this a Slurm login node? (cluster=local runs without Slurm)")
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
        info = parse_cluster_info(self._query(["scontrol", "show", "config"]),
                                  self._query(["scontrol", "-o", "show", "partition"]),
                                  self._query(["scontrol", "-o", "show", "node"]))
        self._cluster_name = info.cluster_name
        return info

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
        """The QOS and association limits `user` is held to, and the user's DefaultAccount
        (launcher/slurm/limits.py): two `sacctmgr` calls, made once per Slurm object. The associations
        are this cluster's (ClusterName, once info() has read it): one database may serve several."""
        from launcher.slurm import limits as slurm_limits

        if self._limits is None:
            # the two at once: each is a round trip to slurmdbd (~0.3 s on the dev cluster, more on a
            # busy site), most of a small sweep's preflight
            with ThreadPoolExecutor(max_workers=2) as pool:
                qos = pool.submit(self._query, ["sacctmgr", "-n", "-P", "show", "qos", f"format={slurm_limits.QOS_FORMAT}"])
                users = pool.submit(self._query, ["sacctmgr", "-n", "-P", "show", "user", user, "withassoc",
                                                  f"format={slurm_limits.USER_FORMAT}"])
                self._limits = slurm_limits.parse_limits(qos.result(), users.result(), cluster=self._cluster_name)
        return self._limits

    def queued(self, user: str):
        """The user's jobs that count toward submit limits (pending, running, suspended; one line per
        array task): one `squeue` call, made once per Slurm object, and only when a submit limit could
        be reached (checks.check_limits)."""
        from launcher.slurm import limits as slurm_limits

        if self._queued is None:
            self._queued = slurm_limits.parse_queued(self._query(
                ["squeue", "-h", "-r", "-u", user, "-t", "pending,running,suspended", "-o", slurm_limits.QUEUED_FORMAT]))
        return self._queued

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
            m = JOB_ID.match(jid)
            if m and command == str(script) and m.group(1) not in ids:
                ids.append(m.group(1))
        return ids

    def query(self, job_ids: Iterable[str], settled: Iterable[str] = ()) -> Answer:
        """Task states of array jobs: {job id: {array index: state}} (an Answer, with `reasons`); a job
        the scheduler does not know is absent. One sacct call (JobID, State, Reason). A second call,
        squeue, only when sacct's answer needs it: for the jobs with pending tasks (why each waits:
        sacct never records Priority or Resources and keeps an older reason, sacct(1) Reason; and
        slurmctld knows of a start that accounting has not recorded yet) and for the jobs in `settled`
        (submitted longer than lost_grace_s ago) that sacct does not report. So a run with nothing
        pending costs one slurmdbd query and no slurmctld query. Without accounting (sacct says it is
        disabled, or run.json says so): one squeue call, reasons included."""
        ids = sorted(set(job_ids), key=int)
        if not ids:
            return Answer()
        if self.accounting is not False:
            try:
                text = self._query(["sacct", "-X", "-n", "-P", "-o", SACCT_FORMAT, "-j", ",".join(ids)])
                out = parse_sacct(text)
            except SlurmCommandError as e:
                if _ACCOUNTING_DISABLED not in e.stderr + e.stdout:
                    raise
                self.accounting = False
            else:
                unknown = set(settled) & set(ids) - set(out)
                pending = {j for j, tasks in out.items() if "pending" in tasks.values()}
                # A task that ended NODE_FAIL is requeued by Slurm (our jobs are --requeue), but accounting
                # can show that record a moment before the requeued attempt's: slurmctld knows.
                ask = sorted(unknown | pending | node_failed(text), key=int)
                return merge_answers(out, self._squeue(ask)) if ask else out
        return self._squeue(ids)

    def usage(self, job_ids: Iterable[str]) -> Dict[str, list]:
        """What the jobs used, {job or array task id: [costs.Attempt, oldest first]}: ONE sacct call
        over every id (--duplicates: the earlier attempts of requeued jobs too, with their steps; the
        fields launcher/costs.py reads). LauncherError when the cluster keeps no accounting."""
        from launcher.costs import SACCT_FIELDS, parse_usage

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

    def _squeue(self, ids: List[str]) -> Answer:
        """States and reasons of the jobs slurmctld still holds (pending, running, or ended under
        MinJobAge ago)."""
        if not ids:
            return Answer()
        try:
            return parse_squeue(self._query(["squeue", "-h", "-r", "-t", "all", "-o", SQUEUE_FORMAT,
                                             "-j", ",".join(ids)]))
        except SlurmCommandError as e:
            if _INVALID_JOB_ID in e.stderr + e.stdout:  # it knows none of them
                return Answer()
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
