"""The scheduler a cluster profile names (cluster.backend): the Backend protocol and the registry.

BUILTIN maps a backend's name to its class, imported only when asked for (like launcher/kinds), so
this module imports neither launcher.slurm nor launcher.local, and both may import Facts and
StageRequest from it. What differs between schedulers is an attribute or a method here; nothing
outside launcher/slurm/ and launcher/local/ compares cluster.backend with a name. The checks of a
request against the scheduler (check_stage, check_limits) are the backend's too: launcher/plan/preflight.py
keeps what every backend shares (environments, hub cache, run root, secrets)."""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Dict, Iterable, List, Optional, Protocol

from launcher.errors import ConfigError, LauncherError

BUILTIN: Dict[str, str] = {"slurm": "launcher.slurm.backend:SlurmBackend", "local": "launcher.local.backend:Local"}


@dataclass
class Facts:
    """What preflight checks a run against, read once per submission (Backend.facts)."""

    info: Any = None  # launcher.slurm.facts.ClusterInfo (partitions, nodes, MaxArraySize...); None: no cluster to ask
    max_array_size: int = 1_000_000  # array indices must stay under it: the run is cut in chunks of this size
    accounting: Optional[bool] = None  # the scheduler keeps accounting (recorded in run.json); None: not known
    warnings: List[str] = field(default_factory=list)  # printed as "warning: ..." before preflight's problems


class StageRequest(Protocol):
    """What a backend's checks read of a stage: launcher.plan.model.StagePlan, one resource group at a time
    (StagePlan.group_views). The backends are below the plan (pyproject.toml's layers), so they take
    it by these attributes and do not import it."""

    name: str
    resources: Dict[str, Any]  # the stage's resources section (nodes, gpus_per_node, partition, mem_gb...)
    time_min: Optional[int]  # the time limit in minutes; None: UNLIMITED


class Backend(Protocol):
    """A scheduler, as the verbs use it. Class attributes say what it can do; instances talk to it."""

    name: ClassVar[str]
    poll_s: ClassVar[float]  # `--wait`/`watch`: seconds between status queries
    srun_steps: ClassVar[bool]  # the batch script starts its task with srun (which delivers --signal); else the
    #                             backend signals the task itself
    runs_containers: ClassVar[bool]  # a container image (pyxis) can run
    waits_on_jobs: ClassVar[bool]  # a stage may wait on a job outside the run (after: {job:N: kind})
    node_health_checks: ClassVar[bool]  # tasks run on nodes that can be bad: the health check applies
    accounting_spans_runs: ClassVar[bool]  # one usage() query can answer for every run of the cluster
    lost_grace_s: float  # a job the scheduler does not report is pending this long after submission, then lost
    prefetches: ClassVar[bool]  # `prefetch` asks the scheduler something (worth starting before composing)
    concurrent_submits: ClassVar[int]  # submit() calls at once for the parts of one stage (launcher/run/submit.py)

    def submit(self, script: Path, dependency: Optional[str]) -> str:
        """Queue one batch script (after `dependency`, Slurm's --dependency syntax); its job id."""

    def query(self, job_ids: Iterable[str], settled: Iterable[str] = ()) -> Dict[str, Dict[int, str]]:
        """{job id: {array index: task state}} (an Answer: with `reasons`, why pending tasks wait); a job
        the scheduler does not know is absent."""

    def usage(self, job_ids: Iterable[str]) -> Dict[str, list]:
        """What the jobs used: {job or array task id: [launcher.costs.Attempt, oldest first]} (one
        accounting query; `launcher usage`)."""

    def cancel(self, job_ids: Iterable[str]) -> None:
        """Cancel these jobs (every task of each)."""

    def prefetch(self) -> None:
        """Start asking the scheduler, in the background, what `facts` and preflight's limits will read,
        while the caller builds the plan (answers taken by `facts`/`checks`; an error is raised there)."""

    def facts(self) -> Facts:
        """The cluster facts preflight checks the run against."""

    def checks(self, facts: Facts) -> Dict[str, Optional[Callable]]:
        """The scheduler's own checks, as preflight's keyword arguments (srun_help, reservations,
        associations, limits, queued): each called at most once, only when a stage needs it."""

    @staticmethod
    def check_run(plan: Any, info: Any, srun_help: Optional[Callable[[], str]] = None,
                  associations: Optional[Callable[[str], tuple]] = None, user: str = "") -> List[ConfigError]:
        """The whole run against what the scheduler holds at all (launcher/slurm/checks.py check_run:
        pyxis for container images, MaxArraySize, MaxJobCount, the user's accounts and QOS), each error
        naming its key. `srun_help` and `associations` come from `checks` and are called only when a
        stage needs them."""

    @staticmethod
    def check_stage(stage: StageRequest, cluster: dict, info: Any,
                    reservations: Optional[Callable[[], Dict[str, Any]]] = None, user: str = "") -> List[ConfigError]:
        """What the scheduler would refuse, or accept and never start, in one resource group of a stage
        (launcher/slurm/checks.py: partitions, nodes, GRES, reservations; launcher/local/checks.py: this
        machine's nodes and GPUs), each error naming the stage and key. `info`: Facts.info;
        `reservations` (from `checks`) is called at most once a run, and only when a stage names one;
        `user`: who submits."""

    @staticmethod
    def check_limits(plan: Any, info: Any, limits: Any,
                     queued: Optional[Callable[[], list]] = None) -> tuple[List[ConfigError], List[str]]:
        """The whole run against the scheduler's limits (`limits`: what checks()['limits'] returned for
        the user; `queued`: the user's queued jobs, called at most once): (errors, warnings), a warning
        for what only delays the run. Called only when `checks` gave a `limits`."""

    def check_external(self, plan: Any) -> tuple[List[ConfigError], List[tuple]]:
        """The jobs outside the run that stages wait on (after: {job:N: kind}, waits_on_jobs only)
        against the scheduler (launcher/slurm/checks.py check_external): (errors naming the stage and
        `after.job:N` key, [(stage, job id, why)] for the edges that hold already and are submitted
        without the dependency). A backend that does not wait on jobs returns ([], [])."""

    @staticmethod
    def job_ref(run_dir: str, job_id: str) -> str:
        """How a dependency of another run names job `job_id` of run `run_dir` (launcher/run/inflight.py)."""


def names() -> List[str]:
    """Every backend a profile may name."""
    return list(BUILTIN)


def get(name: str) -> type:
    """The class of a backend, its module imported now. LauncherError for a name that is none."""
    where = BUILTIN.get(name)
    if where is None:
        raise LauncherError(f"cluster.backend must be {' or '.join(repr(n) for n in BUILTIN)}, got {name!r}")
    module, _, attr = where.partition(":")
    return getattr(importlib.import_module(module), attr)


def for_cluster(cluster: dict, run_dir: Path, accounting: Optional[bool] = None) -> Backend:
    """The scheduler of a cluster profile, for a run (or run root) folder. `accounting`: False when the
    cluster is known to have no accounting (run.json), so status asks squeue only."""
    return get(cluster["backend"])(cluster, run_dir, accounting=accounting)
