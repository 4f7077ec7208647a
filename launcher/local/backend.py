"""The embedded default (cluster=local): the same sbatch scripts and dependency strings as on Slurm,
run on this machine by a small detached scheduler process (launcher.local.driver) that implements
arrays, %N throttles, afterok/afterany/afternotok/aftercorr with kill-invalid-depend semantics, time
limits with the pre-timeout signal, and requeue. `run` returns at once; the shell may close."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional

from filelock import FileLock

from jobs import layout

from launcher.answer import Answer
from launcher.backends import Facts, StageRequest
from launcher.errors import ConfigError
from launcher.local import checks as local_checks
from launcher.local.driver import TERMINAL

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the checkout this launcher runs from
# Array indices of a run are cut in chunks of this size; the driver has no limit of its own.
MAX_ARRAY_SIZE = 1_000_000

# The driver imports this very launcher. Not `python -m launcher.local.driver`: that puts the shell's
# working directory first on sys.path, and a `launcher` or `jobs` folder there (another checkout, a
# user's package) would run in its place. `-c` puts '' there instead, which goes.
DRIVER = (f"import sys; sys.path[:] = [{str(PROJECT_ROOT)!r}] + [p for p in sys.path if p]; "
          "from launcher.local.driver import main; main()")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours (tests start drivers too) is not alive.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


class Local:
    """The Backend protocol (launcher/backends.py) on this machine: job files in <run>/local/, one
    detached driver that runs them."""

    name = "local"
    poll_s = 2.0
    srun_steps = False  # the driver signals the task itself (launcher/local/driver.py signal_steps)
    runs_containers = False  # no pyxis here
    waits_on_jobs = False  # no job outside the run exists for it
    node_health_checks = False  # this machine only
    accounting_spans_runs = False  # each run's driver keeps its own records

    def __init__(self, cluster: dict, run_dir: Path, accounting: Optional[bool] = None):
        self.dir = Path(run_dir) / "local"
        self.max_parallel = cluster.get("max_parallel") or os.cpu_count() or 1
        self.calls: Dict[str, int] = {}

    @property
    def lock(self) -> FileLock:
        self.dir.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.dir / "driver.lock"))

    @staticmethod
    def job_ref(run_dir: str, job_id: str) -> str:
        """Each run has its own local scheduler and job ids: another run's job is `<run dir>#<id>`, which
        this run's driver looks up in that run's state (launcher/local/driver.py foreign_states)."""
        return f"{run_dir}#{job_id}"

    def driver_pid(self) -> Optional[int]:
        try:
            pid = int((self.dir / "driver.pid").read_text())
        except (FileNotFoundError, ValueError):
            return None
        return pid if _alive(pid) else None

    def submit(self, script: Path, dependency: Optional[str]) -> str:
        self.calls["submit"] = self.calls.get("submit", 0) + 1
        jobs = self.dir / "jobs"
        jobs.mkdir(parents=True, exist_ok=True)
        with self.lock:
            counter = self.dir / "next_id"
            job_id = int(counter.read_text()) if counter.exists() else 1
            layout.atomic_write_text(counter, f"{job_id + 1}\n")
            # The job file exists before we look for a driver: a driver that is about to exit
            # re-reads the job folder under this lock, so no job is ever left without one.
            layout.atomic_write_json(jobs / f"{job_id}.json",
                                     {"id": str(job_id), "script": str(script), "dependency": dependency or ""})
            if self.driver_pid() is None:
                log = open(self.dir / "driver.log", "a")
                proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(self.dir), str(self.max_parallel)],
                                        stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
                                        close_fds=True)
                layout.atomic_write_text(self.dir / "driver.pid", f"{proc.pid}\n")
        return str(job_id)

    prefetches = False
    concurrent_submits = 1  # one job file and counter under a lock: nothing to wait on

    def prefetch(self) -> None:
        """Nothing to ask (`facts`)."""

    def facts(self) -> Facts:
        """Nothing to ask: this machine has no partitions, limits or accounting."""
        return Facts(max_array_size=MAX_ARRAY_SIZE)

    def checks(self, facts: Facts) -> Dict[str, Optional[Callable]]:
        return {}

    @staticmethod
    def check_run(plan, info=None, srun_help=None, associations=None, user: str = "") -> List[ConfigError]:
        """Nothing the run as a whole could exceed here (array size: launcher/local/driver.py)."""
        return []

    @staticmethod
    def check_stage(stage: StageRequest, cluster: dict, info=None, reservations=None, user: str = "") -> List[ConfigError]:
        """One machine (checks.py); no partitions or reservations to check against."""
        return local_checks.check_stage(stage, cluster)

    @staticmethod
    def check_limits(plan, info, limits, queued=None) -> tuple[List[ConfigError], List[str]]:
        """No limits on jobs here (checks() gives no `limits`, so preflight does not call it)."""
        return [], []

    @staticmethod
    def check_external(plan) -> tuple[List[ConfigError], List[tuple]]:
        """No job outside the run exists here (the plan refuses such edges: waits_on_jobs is False)."""
        return [], []

    # The local scheduler is the only one: a job it does not know and will not load is lost at once.
    lost_grace_s = 0.0

    def query(self, job_ids: Iterable[str], settled: Iterable[str] = ()) -> Answer:
        """{job id: {array index: state}} (an Answer, with each task's restarts and a pending task's
        reason) from the driver's state.json; a job the driver has not loaded yet is pending while a
        driver runs, and absent (unknown: lost) once none does."""
        self.calls["query"] = self.calls.get("query", 0) + 1
        state = layout.read_json(self.dir / "state.json", {}) or {}
        driver_gone = self.driver_pid() is None
        out = Answer()
        for jid in map(str, job_ids):
            tasks = state.get(jid)
            if tasks:
                out[jid] = {int(i): ("failed" if driver_gone and t["state"] not in TERMINAL else t["state"])
                            for i, t in tasks.items()}
                out.restarts[jid] = {int(i): t.get("restarts", 0) for i, t in tasks.items()}
                reasons = {int(i): t["reason"] for i, t in tasks.items() if t.get("reason") and not driver_gone}
                if reasons:
                    out.reasons[jid] = reasons
            elif not driver_gone and (self.dir / "jobs" / f"{jid}.json").exists():
                out[jid] = {i: "pending" for i in self._indices(jid)}
        return out

    def usage(self, job_ids: Iterable[str]) -> Dict[str, list]:
        """{"<job>_<index>": [accounting.Attempt, oldest first]} from the driver's records (state.json:
        each ended attempt's start, end, exit, CPU time and peak RSS from wait4(2); a running attempt
        counts up to now) and the job's sbatch directives (cpus, memory, GPUs asked for). Tasks that
        never started have no attempt. No scheduler call: the local driver is the only record."""
        from launcher.costs import Attempt
        from launcher.local.driver import sbatch_directives

        self.calls["usage"] = self.calls.get("usage", 0) + 1
        state = layout.read_json(self.dir / "state.json", {}) or {}
        now, out = time.time(), {}
        for jid in sorted(set(map(str, job_ids)), key=int):
            spec = layout.read_json(self.dir / "jobs" / f"{jid}.json", {}) or {}
            try:
                d = sbatch_directives(Path(spec["script"]).read_text())
            except (KeyError, OSError):
                d = {}
            cpus = int(d.get("cpus-per-task") or 1) * int(d.get("ntasks-per-node") or 1) * int(d.get("nodes") or 1)
            mem = _mem_bytes(d.get("mem") or "")
            gpus = _gres_gpus(d)
            for idx, task in (state.get(jid) or {}).items():
                records = list(task.get("attempts") or [])
                if task.get("started") is not None:  # running now
                    records.append({"started": task["started"], "ended": now, "state": "RUNNING"})
                out[f"{jid}_{idx}"] = [Attempt(
                    job=f"{jid}_{idx}", state=str(r.get("state", "")).upper(), cpus=cpus, gpus=gpus,
                    elapsed_s=max(0.0, r["ended"] - r["started"]), cpu_used_s=r.get("cpu_s"),
                    mem_alloc=mem,
                    mem_used=r["max_rss_kb"] * 1024 if r.get("max_rss_kb") is not None else None,
                    start=time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(r["started"])))
                    for r in records]
        return out

    def _indices(self, jid: str) -> list:
        from launcher.sbatch.arrays import expand
        from launcher.local.driver import sbatch_directives

        spec = layout.read_json(self.dir / "jobs" / f"{jid}.json", {}) or {}
        try:
            array = sbatch_directives(Path(spec["script"]).read_text()).get("array", "0")
        except (KeyError, OSError):
            return []
        return list(expand(array.split("%")[0]))

    def cancel(self, job_ids: Iterable[str]) -> None:
        ids = sorted(set(job_ids))
        if ids:
            layout.atomic_write_json(self.dir / "cancel" / f"{uuid.uuid4().hex}.json", ids)


def _gres_gpus(directives: Dict[str, str]) -> int:
    """GPUs per node x nodes of an sbatch script's --gres=gpu[:type]:N or --gpus-per-node (0: none)."""
    per_node = directives.get("gpus-per-node") or ""
    m = re.search(r"(?:^|,)gpu(?::[^:,]+)?:(\d+)", directives.get("gres") or "")
    n = int(m.group(1)) if m else int(per_node.rsplit(":", 1)[-1]) if per_node.rsplit(":", 1)[-1].isdigit() else 0
    return n * int(directives.get("nodes") or 1)


def _mem_bytes(value: str) -> Optional[int]:
    """sbatch --mem ('3GB', '1024MB', '2G', '500': MB by default, sbatch(1)) -> bytes; None if absent or 0."""
    m = re.match(r"^(\d+)([KMGT]?)B?$", value.strip().upper())
    if not m or int(m.group(1)) == 0:
        return None
    return int(m.group(1)) * 1024 ** ({"K": 1, "M": 2, "G": 3, "T": 4}[m.group(2) or "M"])
