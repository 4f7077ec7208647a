"""The config of `hydra/launcher=launcher_slurm` (hydra.launcher.*): where the run goes, and the array
job's resources with the stage's field names (launcher/config/schema.py Resources; null: the stage's default
or the cluster profile's) or hydra-submitit-launcher's names for them (_settings.ALIASES). Imports
Hydra only (Hydra imports this module whenever an app starts). No `from __future__ import annotations`:
Hydra's plugin scanner runs the module before it is in sys.modules, where dataclasses would look up
string annotations."""
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore


@dataclass
class RequeueConf:
    """The stage's requeue section (null: its default): requeues per task, the stop signal and how long
    before the time limit it comes, the grace after a SIGTERM."""

    max: Optional[int] = None
    signal: Optional[str] = None
    signal_delay_s: Optional[int] = None
    term_grace_s: Optional[int] = None


@dataclass
class LauncherSlurmConf:
    _target_: str = "hydra_plugins.launcher_slurm.launcher.LauncherSlurm"
    # The cluster profile (cluster_profiles/<name>.yaml of the launcher): $LAUNCHER_CLUSTER, else local.
    cluster: str = "${oc.env:LAUNCHER_CLUSTER,local}"
    # Where the run directory goes (what `launcher status|logs|resume|cancel` read): $LAUNCHER_RUN_ROOT, else ./runs.
    run_root: str = "${oc.env:LAUNCHER_RUN_ROOT,runs}"
    run_name: Optional[str] = None  # appended to the run id
    # More code the tasks import from the run's snapshot (the app's folder, with its primary config
    # folder, always is), and the most a code path may hold.
    code: List[str] = field(default_factory=list)
    code_max_mb: float = 50.0
    env: Dict[str, str] = field(default_factory=dict)  # extra environment of the tasks
    throttle: Optional[int] = None  # at most this many tasks at once (sbatch --array=...%N)
    requeue: RequeueConf = field(default_factory=RequeueConf)
    # The stage's resources, same names (launcher/config/schema.py Resources).
    partition: Optional[str] = None
    time: Optional[str] = None  # Slurm time: MM, HH:MM:SS, D-HH:MM:SS (stage default 00:10:00)
    nodes: Optional[int] = None
    ntasks_per_node: Optional[int] = None
    cpus_per_task: Optional[int] = None
    gpus_per_node: Any = None  # a count, or "type:count"
    mem_gb: Optional[float] = None
    account: Optional[str] = None
    qos: Optional[str] = None
    constraint: Optional[str] = None
    exclusive: Optional[bool] = None
    gres: Optional[str] = None
    gpus_per_task: Optional[int] = None
    cpus_per_gpu: Optional[int] = None
    mem_per_cpu_gb: Optional[float] = None
    mem_per_gpu_gb: Optional[float] = None
    reservation: Optional[str] = None
    nodelist: Optional[str] = None
    exclude: Optional[str] = None
    licenses: Optional[str] = None
    mail_type: Optional[str] = None
    mail_user: Optional[str] = None
    comment: Optional[str] = None
    begin: Optional[str] = None
    deadline: Optional[str] = None
    hint: Optional[str] = None
    network: Optional[str] = None
    sbatch: Dict[str, Any] = field(default_factory=dict)  # any other sbatch option: {option: value}
    # hydra-submitit-launcher's names, accepted as aliases (setting both names of one field is an error).
    timeout_min: Optional[int] = None  # -> time
    tasks_per_node: Optional[int] = None  # -> ntasks_per_node
    array_parallelism: Optional[int] = None  # -> throttle
    max_num_timeout: Optional[int] = None  # -> requeue.max
    signal_delay_s: Optional[int] = None  # -> requeue.signal_delay_s
    additional_parameters: Dict[str, Any] = field(default_factory=dict)  # -> sbatch


ConfigStore.instance().store(group="hydra/launcher", name="launcher_slurm", node=LauncherSlurmConf,
                             provider="launcher_slurm")
