"""The Slurm backend (cluster.backend=slurm): the Backend protocol (launcher/backends.py) over the
clients of client.py. What it adds to them: the cluster facts preflight reads, the clients it hands
preflight (`checks`), and the checks of the requests against those facts (checks.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List, Optional

from launcher.backends import Facts
from launcher.errors import ConfigError
from launcher.slurm import checks as slurm_checks
from launcher.slurm.client import Slurm


class SlurmBackend(Slurm):
    name = "slurm"
    poll_s = 10.0
    srun_steps = True
    runs_containers = True
    waits_on_jobs = True
    node_health_checks = True
    accounting_spans_runs = True  # slurmdbd holds every job of the cluster: one sacct for all runs
    prefetches = True  # scontrol's and sacctmgr's answers (prefetch)
    # sbatch calls at once for a stage's MaxArraySize chunks: each waits on slurmctld (its job write
    # lock), so a few overlap their process start and round trip without crowding the controller
    concurrent_submits = 4

    # pyxis, MaxArraySize, MaxJobCount, accounts; partitions, nodes, GRES, reservations; QOS and
    # association limits (checks.py).
    check_run = staticmethod(slurm_checks.check_run)
    check_stage = staticmethod(slurm_checks.check_stage)
    check_limits = staticmethod(slurm_checks.check_limits)

    def check_external(self, plan) -> tuple[List[ConfigError], List[tuple]]:
        """One squeue call (and sacct for what slurmctld forgot) for the jobs outside the run, then
        checks.check_external."""
        jobs = {j for s in plan.stages.values() for j in s.external}
        return slurm_checks.check_external(plan, self.job_states(jobs)) if jobs else ([], [])

    @staticmethod
    def job_ref(run_dir: str, job_id: str) -> str:
        """A Slurm job id names the job in any run's dependency."""
        return str(job_id)

    def __init__(self, cluster: dict, run_dir: Optional[Path] = None, accounting: Optional[bool] = None):
        super().__init__(cluster, accounting=accounting)
        self._info = None  # Slurm.info, when `prefetch` asked it
        self._prefetched = None  # prefetch's thread, joined by `facts`
        self._info_error: Optional[BaseException] = None  # why prefetch's Slurm.info failed

    def prefetch(self) -> None:
        """Slurm.info's three `scontrol` calls and, when the cluster keeps accounting, the limits' two
        `sacctmgr` calls, in a thread: they wait on slurmctld and slurmdbd (~0.3 s on the idle dev
        cluster, more at a busy site), not on this process, so they overlap building the plan. The
        calls are those preflight makes anyway (it reads the limits whenever accounting answers). The
        error of Slurm.info (after its retries) is raised by `facts`; limits that failed are asked again
        by preflight, which reports the error."""
        import getpass
        import threading

        def ask() -> None:
            try:
                self._info = self.info()
            except Exception as e:  # noqa: BLE001 - raised by facts(), in the caller's thread
                self._info_error = e
                return
            if self._info.accounting is not False:
                try:
                    self.limits(getpass.getuser())
                except Exception:  # noqa: BLE001 - asked again by preflight, which reports it
                    pass

        self._prefetched = threading.Thread(target=ask, name="slurm-prefetch", daemon=True)
        self._prefetched.start()

    def facts(self) -> Facts:
        """Three `scontrol` calls (Slurm.info; made by `prefetch` when it ran), and a warning for the
        SBATCH_* variables dropped."""
        if self._prefetched is not None:
            self._prefetched.join()
            self._prefetched = None
        if self._info_error is not None:
            raise self._info_error
        info = self._info or self.info()
        warnings = [f"{', '.join(self.dropped)} in this shell would override what preflight checked; sbatch "
                    f"is called without them (set site defaults in the cluster profile: cluster.resources, "
                    f"cluster.account, cluster.partition)"] if self.dropped else []
        return Facts(info=info, max_array_size=info.max_array_size, accounting=info.accounting, warnings=warnings)

    def checks(self, facts: Facts) -> Dict[str, Optional[Callable]]:
        # Without accounting there are no associations to check (sacctmgr fails), and slurmctld takes
        # any --account/--qos as it is.
        accounting = facts.accounting is not False
        return {"srun_help": self.srun_help, "reservations": self.reservations,
                "associations": self.associations if accounting else None,
                "limits": self.limits if accounting else None, "queued": self.queued}
