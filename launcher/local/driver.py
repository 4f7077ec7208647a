"""The local scheduler process (cluster=local): `python -m launcher.local.driver <local dir> <slots>`.

It reads job files written by launcher.local.backend.Local.submit (an sbatch script plus a Slurm dependency
string), runs array tasks as `bash <script>` with the array index in the environment, and keeps
state.json (it is its only writer). It exits when every task it knows has ended."""
from __future__ import annotations

import json
import os
import shlex
import getpass
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from filelock import FileLock

from jobs import layout
from jobs.task import CANCEL_EXIT, REQUEUE_EXIT

from launcher.sbatch.arrays import expand
from launcher.sbatch.lognames import expand_pattern
from launcher.sbatch.values import time_limit_min

TERMINAL = {"completed", "failed", "cancelled"}
# Like Slurm's KillWait: `launcher cancel` and the time limit send SIGTERM to the task's process
# group, SIGKILL this long after. On SIGTERM jobs.task lets the work checkpoint and exits without a
# marker; the state here (cancelled, or failed for the time limit) is decided by this driver.
KILL_GRACE_S = 5
UNLIMITED_S = 365 * 86400  # --time=UNLIMITED: a year stands in for "never"


def sbatch_directives(script: str) -> Dict[str, str]:
    out = {}
    for line in script.splitlines():
        if line.startswith("#SBATCH "):
            for tok in shlex.split(line[len("#SBATCH "):]):
                k, _, v = tok.lstrip("-").partition("=")
                out[k] = v
    return out


def parse_dependency(dep: str) -> List[Tuple[str, List[str]]]:
    """'afterok:1:2,aftercorr:3,singleton' → [('afterok', ['1','2']), ('aftercorr', ['3'])]."""
    out = []
    for part in filter(None, dep.split(",")):
        kind, *ids = part.split(":")
        if ids:
            out.append((kind, ids))
    return out


def signal_steps(shell: int, sig: int) -> List[int]:
    """Send the pre-timeout signal the way Slurm's `sbatch --signal=<sig>` (no "B:") does: to the task's
    processes, "but not the batch shell itself" (sbatch(1)). `shell` is the `bash <script>` process,
    leader of the task's process group (started with start_new_session); every other member of that group
    gets `sig`. Signalling the whole group killed the shell (no trap: exit -12) and so failed a task that
    was about to requeue. Members are found through /proc/<pid>/stat (field 5, pgrp). Returns the pids."""
    sent = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == shell:
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                pgrp = int(f.read().rsplit(")", 1)[1].split()[2])  # after "pid (comm)": state ppid pgrp
            if pgrp == shell:
                os.kill(int(name), sig)
                sent.append(int(name))
        except (OSError, ValueError, IndexError):  # gone meanwhile, or not ours to read
            continue
    return sent


def group_alive(pgid: int) -> bool:
    """Whether any process of the task's process group is left (the batch shell `pgid` may be gone).
    Zombies count until reaped; the caller's deadline bounds the wait."""
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:  # a member we may not signal still exists
        return True


def foreign_states(ref: str) -> List[str]:
    """The task states of job `<run dir>#<id>` of another run's local scheduler (Local.job_ref), read
    from that run's state.json: a job its driver has not loaded yet is pending; a task left unfinished
    by a driver that is gone, or a job that run never had, is failed, so the edge never holds (as
    Slurm refuses a dependency on an unknown job)."""
    run_dir, _, jid = ref.rpartition("#")
    local = Path(run_dir) / "local"
    tasks = (layout.read_json(local / "state.json", {}) or {}).get(jid)
    alive = _pid_alive(local / "driver.pid")
    if tasks:
        return [t["state"] if t["state"] in TERMINAL or alive else "failed" for t in tasks.values()]
    return ["pending"] if alive and (local / "jobs" / f"{jid}.json").exists() else ["failed"]


def _pid_alive(pid_file: Path) -> bool:
    try:
        os.kill(int(pid_file.read_text()), 0)
    except (OSError, ValueError):
        return False  # no file (the driver exited), a bad one, or no such process
    return True


def waiting_reason(verdict: str, throttled: bool) -> str:
    """Why a pending task did not start, in the words squeue's %r uses for the same cause: Dependency
    (a parent it waits on has not ended as needed), JobArrayTaskLimit (the array's %N throttle is
    reached), else Resources (every slot, max_parallel, is taken)."""
    if verdict == "wait":
        return "Dependency"
    return "JobArrayTaskLimit" if throttled else "Resources"


def reap(t: "Task") -> Optional[int]:
    """The exit status of the task's batch shell once it ended (Popen.poll's convention: -N for signal
    N), else None. Reaped with wait4(2) rather than poll() for its resource usage (t.rusage), which
    covers the shell and every descendant that was waited for: the task's CPU time at no extra cost."""
    if t.proc.returncode is not None:
        return t.proc.returncode
    try:
        pid, status, usage = os.wait4(t.proc.pid, os.WNOHANG)
    except ChildProcessError:  # reaped elsewhere: no usage to read
        return t.proc.poll()
    if pid == 0:
        return None
    t.proc.returncode, t.rusage = os.waitstatus_to_exitcode(status), usage
    return t.proc.returncode


def attempt_record(t: "Task", now: float) -> dict:
    """The ended attempt's record (Task.attempts)."""
    u = t.rusage
    t.rusage = None
    return {"started": round(t.started, 3), "ended": round(now, 3), "exit": t.exit, "state": t.state,
            "cpu_s": round(u.ru_utime + u.ru_stime, 3) if u else None, "max_rss_kb": u.ru_maxrss if u else None}


@dataclass
class Task:
    state: str = "pending"
    restarts: int = 0
    exit: Optional[int] = None
    proc: Optional[subprocess.Popen] = field(default=None, repr=False)
    started: float = 0.0
    signalled: bool = False
    killed_at: float = 0.0
    reason: str = ""  # why a pending task waits, in Slurm's words (Dependency, JobArrayTaskLimit, Resources)


    # Ended attempts: {"started", "ended" (Unix s), "exit", "cpu_s" (user + system CPU of the batch
    # shell and every process it and its children waited for, from wait4(2)), "max_rss_kb" (the
    # largest of them), "state"}: what `launcher usage` reads on this backend.
    attempts: List[dict] = field(default_factory=list)
    rusage: Optional[object] = field(default=None, repr=False)  # of the attempt just reaped


@dataclass
class Job:
    id: str
    script: Path
    deps: List[Tuple[str, List[str]]]
    tasks: Dict[int, Task]
    throttle: Optional[int]
    time_s: int
    signal: int
    signal_delay_s: int
    output: str
    error: str
    name: str = ""


class Driver:
    def __init__(self, local_dir: Path, slots: int):
        self.dir, self.slots = local_dir, slots
        self.jobs: Dict[str, Job] = {}
        self.dirty = True
        # Jobs an earlier driver of this run already handled keep their outcome; tasks it left
        # unfinished died with it (like a node failure on Slurm): failed, for resume to redo.
        self.previous = layout.read_json(local_dir / "state.json", {}) or {}

    def load_new_jobs(self) -> bool:
        found = False
        for f in sorted((self.dir / "jobs").glob("*.json"), key=lambda p: int(p.stem)):
            if f.stem in self.jobs:
                continue
            spec = json.loads(f.read_text())
            d = sbatch_directives(Path(spec["script"]).read_text())
            array = d.get("array", "0")
            sig, _, delay = d.get("signal", "USR2@90").partition("@")
            self.jobs[spec["id"]] = Job(
                id=spec["id"], script=Path(spec["script"]), deps=parse_dependency(spec["dependency"]),
                tasks={i: Task() for i in expand(array)},
                throttle=int(array.split("%")[1]) if "%" in array else None,
                time_s=(time_limit_min(d.get("time", "60")) or UNLIMITED_S // 60) * 60, signal=getattr(signal, "SIG" + sig.lstrip("B:")),
                signal_delay_s=int(delay or 90), output=d.get("output", "/dev/null"), error=d.get("error", "/dev/null"),
                name=d.get("job-name", ""))
            for i, old in self.previous.get(spec["id"], {}).items():
                t = self.jobs[spec["id"]].tasks[int(i)]
                t.state = old["state"] if old["state"] in TERMINAL else "failed"
                t.restarts, t.exit, t.attempts = old["restarts"], old["exit"], old.get("attempts", [])
            found = self.dirty = True
        return found

    def handle_cancels(self) -> None:
        for f in (self.dir / "cancel").glob("*.json") if (self.dir / "cancel").exists() else []:
            for jid in json.loads(f.read_text()):
                job = self.jobs.get(str(jid))
                for t in job.tasks.values() if job else ():
                    if t.state == "pending":
                        t.state = "cancelled"
                    elif t.state == "running" and t.proc:
                        os.killpg(t.proc.pid, signal.SIGTERM)
                        t.state, t.killed_at = "cancelling", time.time()
            f.unlink()
            self.dirty = True

    def dependency_verdict(self, idx: int, job: Job) -> str:
        """'ok', 'wait' or 'never' (a dependency that can no longer be satisfied: cancel the task)."""
        for kind, parents in job.deps:
            for pid in parents:
                parent = self.jobs.get(pid)
                if parent is None:
                    if "#" not in pid:
                        continue  # not a job of this run's local scheduler
                    states = foreign_states(pid)  # another run's job computing a point we need
                elif kind == "aftercorr" and idx in parent.tasks:
                    states = [parent.tasks[idx].state]
                else:  # like Slurm: an aftercorr index the parent lacks waits for the whole parent
                    states = [t.state for t in parent.tasks.values()]
                ended = all(s in TERMINAL for s in states)
                if kind in ("afterok", "aftercorr"):
                    if any(s in ("failed", "cancelled") for s in states):
                        return "never"
                    if not all(s == "completed" for s in states):
                        return "wait"
                elif kind == "afterany" and not ended:
                    return "wait"
                elif kind == "after" and any(s == "pending" for s in states):
                    return "wait"  # Slurm's `after`: the parent has begun (or ended)
                elif kind == "afternotok":
                    if not ended:
                        return "wait"
                    if all(s == "completed" for s in states):
                        return "never"
        return "ok"

    def start(self, job: Job, idx: int, t: Task) -> None:
        jid = f"{job.id}_{idx}"

        fields = {"A": job.id, "a": str(idx), "j": jid, "J": f"{jid}.batch", "s": "batch", "t": "0", "n": "0",
                  "N": socket.gethostname().split(".")[0], "x": job.name, "u": getpass.getuser()}

        def path(p: str) -> str:
            return expand_pattern(p, fields)

        env = dict(os.environ, LAUNCHER_ARRAY_JOB_ID=job.id, LAUNCHER_ARRAY_TASK_ID=str(idx), LAUNCHER_JOB_ID=jid,
                   LAUNCHER_RESTART_COUNT=str(t.restarts))
        Path(path(job.output)).parent.mkdir(parents=True, exist_ok=True)
        with open(path(job.output), "a") as out, open(path(job.error), "a") as err:
            t.proc = subprocess.Popen(["bash", str(job.script)], env=env, stdout=out, stderr=err,
                                      stdin=subprocess.DEVNULL, start_new_session=True)
        t.state, t.started, t.signalled, t.killed_at = "running", time.time(), False, 0.0
        self.dirty = True

    def reap_and_enforce_limits(self, now: float) -> None:
        for job in self.jobs.values():
            for t in job.tasks.values():
                if t.proc is None:
                    continue
                rc = reap(t)
                if rc is not None and t.state in ("cancelling", "timeout") and group_alive(t.proc.pid):
                    # The batch shell ended on the SIGTERM but the task's processes are still saving
                    # their checkpoint: the task ends when they do (a Slurm job ends when its cgroup is
                    # empty), or is killed after the grace, like Slurm's KillWait.
                    if now - t.killed_at > KILL_GRACE_S:
                        os.killpg(t.proc.pid, signal.SIGKILL)
                    else:
                        continue
                elif rc is not None and group_alive(t.proc.pid):
                    os.killpg(t.proc.pid, signal.SIGKILL)  # leftovers of an ended task: Slurm kills them too
                if rc is None:
                    elapsed = now - t.started
                    if not t.signalled and elapsed >= job.time_s - job.signal_delay_s:
                        signal_steps(t.proc.pid, job.signal)  # the pre-timeout signal, like --signal
                        t.signalled = True
                    if not t.killed_at and elapsed >= job.time_s:
                        os.killpg(t.proc.pid, signal.SIGTERM)
                        t.killed_at, t.state = now, "timeout"
                    if t.killed_at and now - t.killed_at > KILL_GRACE_S:
                        os.killpg(t.proc.pid, signal.SIGKILL)
                    continue
                t.proc, t.exit, self.dirty = None, rc, True
                if t.state == "cancelling":
                    t.state = "cancelled"
                elif rc == CANCEL_EXIT:  # the task found what it waits on failed (jobs.context.Cancel)
                    t.state = "cancelled"
                elif rc == REQUEUE_EXIT:
                    t.state, t.restarts = "pending", t.restarts + 1
                elif t.state == "timeout" or rc != 0:
                    t.state = "failed"
                else:
                    t.state = "completed"
                t.attempts.append(attempt_record(t, now))

    def schedule(self) -> None:
        running = sum(t.state in ("running", "cancelling", "timeout") for j in self.jobs.values()
                      for t in j.tasks.values())
        for job in self.jobs.values():
            job_running = sum(t.state in ("running", "cancelling", "timeout") for t in job.tasks.values())
            for idx, t in job.tasks.items():
                if t.state != "pending":
                    continue
                verdict = self.dependency_verdict(idx, job)
                if verdict == "never":  # kill_invalid_depend
                    t.state, t.reason, self.dirty = "cancelled", "", True
                elif verdict == "ok" and running < self.slots and (job.throttle is None or job_running < job.throttle):
                    self.start(job, idx, t)
                    t.reason = ""
                    running, job_running = running + 1, job_running + 1
                else:
                    self._wait(t, waiting_reason(verdict, job.throttle is not None and job_running >= job.throttle))

    def _wait(self, t: Task, reason: str) -> None:
        if t.reason != reason:  # state.json is rewritten only when something changed
            t.reason, self.dirty = reason, True

    def save(self) -> None:
        if self.dirty:
            state = {j.id: {str(i): {"state": "running" if t.state in ("cancelling", "timeout") else t.state,
                                     "restarts": t.restarts, "exit": t.exit, "attempts": t.attempts,
                                     **({"started": t.started} if t.proc is not None else {}),
                                     **({"reason": t.reason} if t.state == "pending" and t.reason else {})}
                            for i, t in j.tasks.items()}
                     for j in self.jobs.values()}
            try:
                layout.atomic_write_json(self.dir / "state.json", state)
            except OSError as e:  # e.g. a full filesystem: keep scheduling, write again next round
                print(f"local driver: could not save state: {e}", flush=True)
                return
            self.dirty = False

    def idle(self) -> bool:
        return all(t.state in TERMINAL for j in self.jobs.values() for t in j.tasks.values())

    def run(self) -> None:
        lock = FileLock(str(self.dir / "driver.lock"))
        while True:
            self.load_new_jobs()
            self.handle_cancels()
            self.reap_and_enforce_limits(time.time())
            self.schedule()
            self.save()
            if self.idle():
                with lock:
                    if not self.load_new_jobs():
                        (self.dir / "driver.pid").unlink(missing_ok=True)
                        self.save()
                        return
            time.sleep(0.1)


def main() -> None:
    local_dir, slots = Path(sys.argv[1]), int(sys.argv[2])
    print(f"local driver {os.getpid()} started for {local_dir} with {slots} slot(s)", flush=True)
    Driver(local_dir, slots).run()
    print(f"local driver {os.getpid()}: every task ended, exiting", flush=True)


if __name__ == "__main__":
    main()
