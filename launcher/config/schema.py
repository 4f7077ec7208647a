"""Structured config schema: type errors and unknown keys fail at compose time, before any planning."""
from __future__ import annotations

from dataclasses import dataclass, field, make_dataclass
from enum import Enum
from typing import Any, Dict, List, Optional

from omegaconf import MISSING


class EdgeKind(str, Enum):
    """Slurm dependency kinds a stage may wait on (singleton is a stage flag, not an edge)."""

    afterok = "afterok"  # all parent tasks succeeded; a failed parent cancels the child
    afterany = "afterany"  # all parent tasks ended, whatever their state
    afternotok = "afternotok"  # run only if some parent task failed (cleanup, alerts)
    aftercorr = "aftercorr"  # task i waits for task i of the parent (arrays of equal size)
    after = "after"  # the parent has started: run alongside it (an evaluation that follows training)


@dataclass
class Resources:
    partition: Optional[str] = None  # default: the cluster profile's partition
    time: str = "00:10:00"  # Slurm time: MM, HH:MM:SS, D-HH:MM:SS
    nodes: int = 1
    ntasks_per_node: int = 1
    cpus_per_task: int = 1
    # GPUs per node: a count (8) or a typed count ("a100:8", sbatch --gpus-per-node=[type:]count)
    gpus_per_node: Any = 0
    mem_gb: Optional[float] = None
    account: Optional[str] = None  # default: the cluster profile's
    qos: Optional[str] = None
    constraint: Optional[str] = None
    exclusive: bool = False
    # sbatch options of the same names (sbatch(1)); null: the profile's default (cluster.resources),
    # else not given. Checked in launcher/sbatch/options.py, rendered through submitit's parameters.
    gres: Optional[str] = None  # "gpu:a100:8", "gpu:1,shard:2": name[:type][:count], per node
    gpus_per_task: Optional[int] = None
    cpus_per_gpu: Optional[int] = None
    mem_per_cpu_gb: Optional[float] = None  # at most one of mem_gb, mem_per_cpu_gb, mem_per_gpu_gb
    mem_per_gpu_gb: Optional[float] = None
    reservation: Optional[str] = None
    nodelist: Optional[str] = None  # a Slurm hostlist: "node[01-04],gpu7"
    exclude: Optional[str] = None
    licenses: Optional[str] = None  # "name[:count][,name[:count]]"
    mail_type: Optional[str] = None  # "END,FAIL"
    mail_user: Optional[str] = None
    comment: Optional[str] = None
    begin: Optional[str] = None  # a Slurm time: "now+1hour", "2026-12-01T18:00", "16:00", "tomorrow"
    deadline: Optional[str] = None
    hint: Optional[str] = None  # compute_bound, memory_bound, multithread, nomultithread
    network: Optional[str] = None
    # Any other sbatch long option (without "--"): {option: value}; true for a flag. Checked against the
    # options sbatch knows; the launcher's own (array, dependency, output...) are refused.
    sbatch: Dict[str, Any] = field(default_factory=dict)


@dataclass
class ResourceDefaults:
    """cluster.resources: a site's defaults for the sbatch options above, used by every stage that
    leaves the option null (the `sbatch` maps merge; a stage's key wins)."""

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
    sbatch: Dict[str, Any] = field(default_factory=dict)


@dataclass
class Requeue:
    """Checkpoint-and-requeue on the pre-timeout (or preemption) signal, submitit's protocol, and on a
    SIGTERM that comes without it (Slurm's `scontrol requeue`, scancel, requeue-mode preemption)."""

    max: int = 3  # requeues allowed per task before the task fails
    signal: str = "USR2"
    signal_delay_s: int = 90  # signal this long before the time limit
    # After a SIGTERM without the stop signal, the work has this long to checkpoint and stop. Slurm
    # SIGKILLs after KillWait (default 30 s) or, for a preemption, the QOS/partition GraceTime: keep it below both.
    term_grace_s: int = 25


@dataclass
class Watchdog:
    """The hang watchdog of a training stage (kinds with Kind.hang_watchdog): when its live progress
    file (jobs/runtime/progress.py) stops advancing for `stall_s` seconds, the task's runner dumps every
    rank's Python stacks into the task log, kills the ranks and restarts them in the job (torchrun,
    `restarts` times), then kills the step and requeues it. Off while stall_s is null."""

    stall_s: Optional[float] = None  # no progress write for this long (s) = hung; > the write interval
    startup_s: float = 600.0  # before the first progress write of an attempt: imports, loading, rendezvous
    restarts: int = 1  # in-job restarts (torchrun --max-restarts) before the step is killed and requeued


@dataclass
class Retention:
    """Checkpoint retention of a training stage (kinds with Kind.retains_checkpoints: pretrain with
    backend hf, align): which `checkpoint-N` folders stay (jobs/runtime/retention.py). Off while both
    are null. Whatever they say, the newest complete checkpoint (what a requeue resumes from) and every
    checkpoint an evaluation stage has not scored yet stay."""

    keep_last: Any = None  # the newest N checkpoints (a positive integer); null with keep_every_tokens set: 1
    keep_every_tokens: Any = None  # also the first checkpoint at or past each multiple of this many tokens


@dataclass
class Tracking:
    """Experiment tracking (launcher/plan/tracking.py, docs/tracking.md): `cluster.tracking` is the profile's
    default, a stage's `tracking` overrides it key by key (null: the profile's). The trainers log through
    transformers' own integrations (report_to), one tracked run per (run, stage, sweep point)."""

    backend: Optional[str] = None  # tensorboard | wandb | mlflow | none (the profile's null: none)
    project: Optional[str] = None  # W&B project / MLflow experiment; null: the campaign (else the run id)
    mode: Optional[str] = None  # offline (default: event files, W&B offline runs, an MLflow file store) | online
    # Where the writers write; null: <run>/stages/<stage>/tracking. A shared folder gets <run id>/<stage>/.
    dir: Optional[str] = None
    # online: the NAME of the variable holding the API key (a cluster secret; null: WANDB_API_KEY for
    # wandb, MLFLOW_TRACKING_TOKEN for mlflow). Never its value.
    api_key: Optional[str] = None
    uri: Optional[str] = None  # mlflow online: the tracking server (MLFLOW_TRACKING_URI)


@dataclass
class Model:
    """A Llama-style decoder (root group `model`: conf/model/<preset>.yaml). num_experts > 0 makes it a
    mixture of experts (nanotron's qwen2 MoE config)."""

    name: str = "tiny"
    hidden_size: int = 64
    intermediate_size: int = 256
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    vocab_size: Optional[int] = None  # null: the tokenizer's length (hf backend; nanotron needs it set)
    max_position_embeddings: int = 2048
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    tie_embeddings: bool = True
    init_std: float = 0.02
    num_experts: int = 0  # 0: dense
    experts_top_k: int = 2
    moe_intermediate_size: Optional[int] = None  # per expert; default intermediate_size


# The fields every stage has, before and after the kinds' sections (launcher/kinds: each kind that
# owns a section adds it, e.g. `train: Train`, `serve: Serve`).
STAGE_HEAD = [
    ("kind", str, MISSING),  # a registered kind (launcher.kinds.names()): checked by the plan
    ("tasks", int, 1),  # array tasks per sweep point
    ("throttle", Optional[int], None),  # at most this many tasks of a sweep point at once (%N x points)
    ("after", Dict[str, EdgeKind], field(default_factory=dict)),  # parent stage -> dependency kind
    ("singleton", bool, False),  # one job of this stage at a time across runs (--dependency=singleton)
    # false: never reuse another run's output of the same content key (docs/content-keys.md); serving
    # and publishing never are
    ("cache", bool, True),
    ("command", Optional[str], None),  # kind=command: bash script, run with `bash -euo pipefail -c`
    ("target", Optional[str], None),  # kind=python: "package.module:function"
    ("params", Dict[str, Any], field(default_factory=dict)),  # handed to the callable as ctx.params
    # kind=preprocess: datatrove blocks, each {_target_: class or factory, its arguments}, built on the
    # compute node. Nested lists are flattened (a recipe's filter list can be interpolated in). String
    # arguments may name run folders: {input} (the one parent's output), {input:<stage>}, {output},
    # {removed} (documents filters drop; kept for every filter automatically), {run}.
    ("blocks", List[Any], field(default_factory=list)),
    ("keep_removed", bool, True),  # attach an exclusion writer to every filter that has none
]
STAGE_TAIL = [
    ("env", Dict[str, str], field(default_factory=dict)),  # extra environment for this stage's tasks
    ("resources", Resources, field(default_factory=Resources)),
    ("requeue", Requeue, field(default_factory=Requeue)),
    ("watchdog", Watchdog, field(default_factory=Watchdog)),
    ("retention", Retention, field(default_factory=Retention)),
    ("tracking", Tracking, field(default_factory=Tracking)),  # over cluster.tracking, key by key
]


def _stage_class() -> type:
    """Stage: the common fields and one section per registered kind that owns one (its dataclass)."""
    from launcher import kinds

    sections = [(k.section, k.schema, field(default_factory=k.schema)) for k in kinds.all_kinds() if k.section]
    taken = {f[0] for f in STAGE_HEAD + STAGE_TAIL}
    for name, _, _ in sections:
        if name in taken:
            raise TypeError(f"two stage kinds (or a kind and Stage) claim the config section {name!r}")
        taken.add(name)
    cls = make_dataclass("Stage", [(n, t, f if isinstance(f, type(field())) else field(default=f))
                                   for n, t, f in STAGE_HEAD + sections + STAGE_TAIL])
    cls.__module__ = __name__
    return cls


Stage = _stage_class()


@dataclass
class Pipeline:
    name: str = MISSING
    description: str = ""
    stages: Dict[str, Stage] = field(default_factory=dict)
    # Free-form knobs a pipeline exposes for interpolation and sweeps (e.g. pipeline.vars.scale=1,2,3).
    vars: Dict[str, Any] = field(default_factory=dict)
    # User code the stages import (folders or .py files): snapshotted into the run at submission and
    # put on the tasks' PYTHONPATH, so later edits never change a queued job. `jobs/` always is.
    code: List[str] = field(default_factory=list)
    # Most a code path may hold once git-ignored files, venvs and Hydra outputs are left out (every
    # run copies it): larger is refused at plan time (launcher/plan/snapshot.py).
    code_max_mb: float = 50.0


@dataclass
class Environment:
    """The software a stage runs with: an interpreter (venv/conda), shell setup, variables, and
    optionally a container image started by pyxis (`srun --container-image`)."""

    python: Optional[str] = None  # null: built env's python if `build` is set, else cluster.python
    setup: List[str] = field(default_factory=list)  # after the cluster's setup lines
    env: Dict[str, str] = field(default_factory=dict)
    imports: List[str] = field(default_factory=list)  # modules preflight imports with `python`
    container_image: Optional[str] = None  # squashfs path or registry image (pyxis/enroot)
    container_mounts: List[str] = field(default_factory=list)  # src:dst, for --container-mounts
    build: Optional[str] = None  # `launcher env build` creates it from conf/envs/<build>.txt


@dataclass
class HealthCheck:
    """cluster.health_check: a short check of every node before the work of a multi-node or GPU task
    (jobs/runtime/health.py): run directory writable, free space, the stage's interpreter imports its
    libraries, nvidia-smi GPU count and ECC, a gloo all-reduce across the nodes. A failing node is
    recorded in the run, excluded from the task's requeue and from later submissions of the run."""

    enabled: bool = True
    min_free_gb: float = 1.0  # free space under the run directory and each scratch folder, GB
    scratch_dirs: List[str] = field(default_factory=list)  # node-local folders the work uses (/tmp, /scratch)
    min_allreduce_gbps: float = 0.05  # the all-reduce's bandwidth floor across the nodes, GB/s (> 0)
    allreduce_mb: float = 16.0  # size of the all-reduced buffer, MB
    timeout_s: float = 120.0  # for the whole check (imports, rendezvous, the other nodes' reports)
    max_requeues: int = 3  # requeues for bad nodes (not counted against requeue.max) before the task fails


@dataclass
class Cluster:
    name: str = MISSING
    backend: str = "slurm"  # slurm | local
    description: str = ""
    partition: Optional[str] = None  # default partition for stages that name none
    account: Optional[str] = None
    qos: Optional[str] = None
    resources: ResourceDefaults = field(default_factory=ResourceDefaults)  # defaults for every stage
    slurm_conf: Optional[str] = None  # exported as SLURM_CONF for every Slurm client call
    max_array_size: Optional[int] = None  # default: MaxArraySize from `scontrol show config`
    python: Optional[str] = None  # interpreter on compute nodes; default: the launcher's own
    setup: List[str] = field(default_factory=list)  # shell lines before each task (module load, ...)
    env: Dict[str, str] = field(default_factory=dict)  # exported before each task
    environments: Dict[str, Environment] = field(default_factory=dict)
    # stage kind or stage name -> environment name; a stage name wins over its kind
    stage_environments: Dict[str, str] = field(default_factory=dict)
    envs_dir: Optional[str] = None  # where `launcher env build` puts environments (default <project>/.envs)
    # Names of variables (tokens) handed to tasks from the submitting shell, never written to a file.
    secrets: List[str] = field(default_factory=list)
    # Or a KEY=VALUE file (mode 0600, on the shared filesystem) that each task reads at start.
    secrets_file: Optional[str] = None
    max_parallel: int = 0  # local backend: concurrent tasks (0 = CPU count)
    gpus_per_node: int = 0  # local backend: GPUs this machine offers
    # For `launcher plan`'s GPU-hour estimate of training stages: peak dense bf16 TFLOP/s per GPU and
    # the model FLOPs utilization to expect.
    gpu_peak_tflops: float = 989.0
    expected_mfu: float = 0.35
    rdzv_port_base: int = 20000  # torchrun rendezvous port = base + job id % 10000
    health_check: HealthCheck = field(default_factory=HealthCheck)
    notify_url: Optional[str] = None  # `launcher schedule`: a webhook POSTed when a scheduled firing fails
    # Hugging Face Hub. Stages reach no hub (HF_HUB_OFFLINE=1) except kind fetch. A stage string
    # `hf://org/name[@revision]` is a repo in hub_cache (HF_HUB_CACHE of every task): the plan adds a
    # fetch stage for them (hub_fetch: auto), or preflight requires them cached (hub_fetch: never).
    hub_cache: Optional[str] = None  # shared cache folder that compute nodes read
    hub_fetch: str = "auto"  # auto | never
    hub_partition: Optional[str] = None  # a partition whose nodes reach the hub (default: the profile's)
    hub_endpoint: Optional[str] = None  # HF_ENDPOINT for fetch and publish (a mirror); default huggingface.co
    # Compute nodes reach no internet (most sites): tracking.mode=online is refused (launcher/plan/tracking.py).
    compute_offline: bool = True
    # A team's shared content-key cache (launcher/plan/team_cache.py, docs/content-keys.md): runs link
    # themselves there and find each other's completed outputs; None: the run root only.
    cache_dir: Optional[str] = None
    tracking: Tracking = field(default_factory=Tracking)  # every tracking stage's default (docs/tracking.md)


@dataclass
class Sweep:
    """How the points of a multirun (-m) are submitted."""

    # false: each stage is one array job of points x tasks, and a fan-in/fan-out edge waits on the
    # whole parent array, so one point's failure cancels that child in every point. true: every stage
    # is submitted per point (points x stages sbatch calls) and each point waits on its own parents
    # only, so a failed point leaves the others running.
    independent: bool = False


@dataclass
class Config:
    pipeline: Pipeline = MISSING
    cluster: Cluster = MISSING
    # The data recipe (config group `data`, e.g. data=fineweb_like): blocks and thresholds that data
    # pipelines interpolate; free-form.
    data: Dict[str, Any] = field(default_factory=dict)
    model: Model = field(default_factory=Model)  # the model preset (group `model`, e.g. model=100m)
    seed: int = 1  # pipelines interpolate it (train.seed: ${seed}); sweep it with seed=1,2,3
    campaign: Optional[str] = None  # runs that belong together (ablations): recorded in each run
    # conf/config.yaml: $LAUNCHER_RUN_ROOT, else runs; relative paths are resolved against the current directory
    run_root: str = "runs"
    run_name: Optional[str] = None  # appended to the run id
    wait: bool = False  # block with a live progress table until the run ends
    poll_s: float = 0  # progress refresh (0: 2 s local, 10 s Slurm)
    sweep: Sweep = field(default_factory=Sweep)


def unknown_key_message(key: str, object_type: type) -> str:
    """OmegaConf's words for a key a structured node does not have ("Key 'x' not in 'Resources'"),
    plus the closest field name (difflib), so a typo names its fix: the same message whether the key
    came from a YAML file, a `key=`, `+key=` or `++key=` override."""
    import dataclasses
    import difflib

    fields = [f.name for f in dataclasses.fields(object_type)]
    near = difflib.get_close_matches(str(key), fields, n=1, cutoff=0.6)
    return f"Key '{key}' not in '{object_type.__name__}'" + (f"; did you mean '{near[0]}'?" if near else "")
