"""Structured config schema: type errors and unknown keys fail at compose time, before any planning."""
from __future__ import annotations

from dataclasses import dataclass, field
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


class StageKind(str, Enum):
    command = "command"  # a bash script
    python = "python"  # a function called with the task's context
    preprocess = "preprocess"  # a datatrove pipeline (`blocks`), one datatrove rank per array task
    minhash = "minhash"  # datatrove MinHash dedup: expands into four chained preprocess stages
    pretrain = "pretrain"  # train a model (`train`): nanotron on GPUs, or transformers' Trainer (backend hf)
    torchrun = "torchrun"  # any script under torchrun, one per node, c10d rendezvous on the first node
    convert = "convert"  # nanotron checkpoints of the parent pretrain stage -> Hugging Face format
    evaluate = "evaluate"  # lighteval on every checkpoint of the parent training (or convert) stage, once
    align = "align"  # TRL (SFT, DPO, ...) on a Hugging Face model, launched through accelerate
    fetch = "fetch"  # download hub repos (hf://org/name@rev) into the cluster's shared cache; added by the plan
    publish = "publish"  # upload a stage's output to a hub repo, with a generated card
    serve = "serve"  # vLLM's OpenAI-compatible server; dependents (edge `after`) get its endpoint


class TrainBackend(str, Enum):
    nanotron = "nanotron"  # 4D-parallel, multi-node, GPU only (srun + torchrun)
    hf = "hf"  # transformers' Trainer, one process, CPU or one GPU: small models, tests, the local demo


class LrSchedule(str, Enum):
    cosine = "cosine"
    linear = "linear"
    wsd = "wsd"  # warmup, stable, then decay over the last `decay_fraction` of the steps


@dataclass
class Resources:
    partition: Optional[str] = None  # default: the cluster profile's partition
    time: str = "00:10:00"  # Slurm time: MM, HH:MM:SS, D-HH:MM:SS
    nodes: int = 1
    ntasks_per_node: int = 1
    cpus_per_task: int = 1
    gpus_per_node: int = 0
    mem_gb: Optional[float] = None
    account: Optional[str] = None  # default: the cluster profile's
    qos: Optional[str] = None
    constraint: Optional[str] = None
    exclusive: bool = False


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
class Minhash:
    """kind=minhash: datatrove's MinHash deduplication, written once, run as four array jobs
    (<stage>.signatures: tasks, .buckets: num_buckets, .clusters: 1, .filter: tasks)."""

    # Reads the documents to deduplicate (both the signature and the filter stage read them).
    reader: Dict[str, Any] = field(default_factory=lambda: {
        "_target_": "datatrove.pipeline.readers.JsonlReader", "data_folder": "{input}"})
    # Writes the documents that are kept.
    writer: Dict[str, Any] = field(default_factory=lambda: {
        "_target_": "datatrove.pipeline.writers.JsonlWriter", "output_folder": "{output}"})
    n_grams: int = 5
    num_buckets: int = 14
    hashes_per_bucket: int = 8
    seed: int = 1
    precision: int = 64  # signature hash bits (32 or 64)
    language: str = "en"  # word tokenizer for the shingles


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


@dataclass
class Parallelism:
    """nanotron's 4D layout: dp * tp * pp * cp = nodes * gpus_per_node."""

    dp: int = 1
    tp: int = 1
    pp: int = 1
    cp: int = 1  # context parallel: seq_len % cp == 0
    ep: int = 1  # expert parallel (MoE): num_experts % ep == 0
    pp_engine: str = "1f1b"  # 1f1b | afab
    tp_mode: str = "REDUCE_SCATTER"  # ALL_REDUCE | REDUCE_SCATTER (sequence parallel)
    tp_async: bool = True  # tp_linear_async_communication (REDUCE_SCATTER only)
    recompute_layer: bool = False


@dataclass
class Optimizer:
    lr: float = 3e-4
    min_lr: float = 3e-5
    schedule: LrSchedule = LrSchedule.cosine
    warmup_steps: int = 0
    decay_fraction: float = 0.2  # wsd: the share of the steps spent decaying
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    clip_grad: float = 1.0
    zero_stage: int = 0  # nanotron: 0 or 1


@dataclass
class DataSource:
    """A tokenized folder (datatrove DocumentTokenizer/Merger output) and its sampling weight.
    Folder placeholders as in blocks: {input}, {input:<stage>}."""

    folder: str = MISSING
    weight: float = 1.0


@dataclass
class Train:
    """kind=pretrain. Tokens per step = dp * micro_batch * grad_accum * seq_len."""

    backend: TrainBackend = TrainBackend.hf
    # The root `model` preset (model=100m, model.num_layers=4); an inline mapping replaces it whole.
    # (Any: OmegaConf cannot merge an interpolation into a typed node; the root `model` is typed.)
    model: Any = "${model}"
    tokens: int = 1_000_000  # training budget
    seq_len: int = 256
    micro_batch: int = 8
    grad_accum: int = 1
    checkpoint_every_tokens: int = 0  # a checkpoint each time this many tokens were trained on; 0: end only
    seed: int = "${seed}"  # type: ignore[assignment]  # the root seed (sweep it: seed=1,2,3)
    data: List[DataSource] = field(default_factory=list)  # e.g. [{folder: "{input:merge}", weight: 1.0}]
    tokenizer: str = "{input:tokenizer}/tokenizer.json"  # a tokenizer.json file, or a folder holding one
    dtype: str = "bfloat16"  # hf backend on CPU trains in float32 whatever this says
    optimizer: Optimizer = field(default_factory=Optimizer)
    parallelism: Parallelism = field(default_factory=Parallelism)
    log_every_steps: int = 10
    run_train: Optional[str] = None  # nanotron's run_train.py; default $NANOTRON_HOME/run_train.py
    nanotron: Dict[str, Any] = field(default_factory=dict)  # merged into the rendered nanotron YAML last


@dataclass
class Launch:
    """kind=torchrun: `script` (a .py path or `-m module`) with `args`, under torchrun on every node."""

    script: Optional[str] = None
    args: List[str] = field(default_factory=list)
    nproc_per_node: Optional[int] = None  # default: resources.gpus_per_node, or 1 without GPUs


@dataclass
class Evaluate:
    """kind=evaluate: one array task per sweep point scores every complete checkpoint of the parent
    stage (pretrain with backend hf, or convert) exactly once. With `after: {train: after}` it
    follows training as checkpoints appear and ends when training has ended (whatever its state)."""

    suite: Optional[str] = "demo"  # built-in held-out tasks (jobs/adapters/eval_tasks.py); null: only `tasks`
    # More tasks: {name, kind: multiple_choice | perplexity, path: <jsonl>, metric, random_baseline,
    # higher_is_better} (formats in jobs/adapters/eval_tasks.py).
    tasks: List[Dict[str, Any]] = field(default_factory=list)
    poll_s: float = 20.0  # how often a following evaluation looks for new checkpoints
    batch_size: int = 8
    max_samples: Optional[int] = None  # per task; null: all


@dataclass
class Lora:
    """Adapters instead of full fine-tuning (peft). The saved model has them merged in."""

    enabled: bool = False
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: Any = "all-linear"  # peft's shorthand, or a list of module names
    qlora: bool = False  # load the base model in 4 bits (bitsandbytes, CUDA only)


@dataclass
class Align:
    """kind=align: one TRL trainer on a Hugging Face model folder, launched through accelerate
    (one `accelerate launch` per node; processes per node = GPUs, or 1 on CPU)."""

    trainer: str = "sft"  # sft | dpo (jobs/adapters/trl.py TRAINERS)
    model: str = "{input}/model"  # HF folder: a parent's output ({input}, {input:<stage>}) or a path
    # jsonl: sft {"messages": [{role, content}, ...]}; dpo {"prompt": [...], "chosen": [...], "rejected": [...]}
    data: Optional[str] = None
    chat_template: Optional[str] = None  # null: the tokenizer's own, else the built-in; "builtin"; or a .jinja file
    assistant_only_loss: bool = False  # sft: loss on the assistant's tokens only
    max_length: int = 512
    epochs: float = 1.0
    max_steps: Optional[int] = None  # wins over epochs
    lr: float = 5e-5
    micro_batch: int = 4
    grad_accum: int = 1
    warmup_ratio: float = 0.0
    checkpoint_every_steps: int = 0  # 0: at the end only (and on the stop signal)
    beta: float = 0.1  # dpo: the KL penalty
    seed: int = "${seed}"  # type: ignore[assignment]
    dtype: str = "bfloat16"  # on CPU training runs in float32
    lora: Lora = field(default_factory=Lora)
    deepspeed_zero: Optional[int] = None  # 1, 2 or 3: DeepSpeed ZeRO through accelerate (GPU)
    nproc_per_node: Optional[int] = None  # default: resources.gpus_per_node, or 1 without GPUs
    log_every_steps: int = 5
    trl: Dict[str, Any] = field(default_factory=dict)  # more arguments for the trainer's config (SFTConfig, ...)


@dataclass
class Serve:
    """kind=serve: vLLM's OpenAI-compatible server on the model. The endpoint (host, port, model) is
    published to stages/<stage>/endpoints/<point>.json once /health answers and a test completion
    succeeds; stages that wait on this one with `after` get it as LAUNCHER_ENDPOINT_<STAGE>."""

    model: str = "{input}/model"  # HF folder: a parent's output or a path
    served_model_name: Optional[str] = None  # default: the stage name
    tensor_parallel: int = 1  # GPUs per server (<= resources.gpus_per_node)
    max_model_len: Optional[int] = None
    dtype: str = "auto"
    ready_timeout_s: float = 600.0  # fail (with the server's log) if not ready by then
    serve_s: Optional[float] = None  # stop after this long; null: when the stages that wait on it have ended
    port_base: int = 30000  # port = first free from base + job id % 10000
    args: List[str] = field(default_factory=list)  # more `vllm serve` arguments


@dataclass
class Fetch:
    """kind=fetch: snapshot_download of each repo into the cluster's hub_cache. The plan adds one
    (stage `hub_fetch`) for every hf:// reference of the pipeline; the stages naming them wait on it."""

    repos: List[str] = field(default_factory=list)  # hf://org/name[@revision], hf://datasets/org/name[@revision]
    allow_patterns: List[str] = field(default_factory=list)  # only these files (empty: all)
    ignore_patterns: List[str] = field(default_factory=list)


@dataclass
class Publish:
    """kind=publish: a folder of the run (a model, a data set, evaluation results) to a hub repo, private
    by default, with a generated card (README.md: pipeline, configs, data recipe, scores). The token
    comes from the submitting shell's variable `token_env`, never from a file."""

    source: str = "{input}/model"  # a parent's output ({input}, {input:<stage>}) or a path
    repo_id: Optional[str] = None  # org/name
    repo_type: str = "model"  # model | dataset
    private: bool = True
    token_env: str = "HF_TOKEN"
    commit_message: Optional[str] = None  # default: "launcher: <run id> <stage>"
    allow_patterns: List[str] = field(default_factory=list)  # only these files (empty: all)
    ignore_patterns: List[str] = field(default_factory=list)
    large: bool = False  # upload_large_folder: resumable, many commits (big checkpoints, data sets)
    card: bool = True  # write README.md (replaces one in the source)


@dataclass
class Stage:
    kind: StageKind = MISSING
    tasks: int = 1  # array tasks per sweep point
    throttle: Optional[int] = None  # at most this many tasks of a sweep point at once (%N x points)
    after: Dict[str, EdgeKind] = field(default_factory=dict)  # parent stage -> dependency kind
    singleton: bool = False  # one job of this stage at a time across runs (--dependency=singleton)
    command: Optional[str] = None  # kind=command: bash script, run with `bash -euo pipefail -c`
    target: Optional[str] = None  # kind=python: "package.module:function"
    params: Dict[str, Any] = field(default_factory=dict)  # handed to the callable as ctx.params
    # kind=preprocess: datatrove blocks, each {_target_: class or factory, its arguments}, built on the
    # compute node. Nested lists are flattened (a recipe's filter list can be interpolated in). String
    # arguments may name run folders: {input} (the one parent's output), {input:<stage>}, {output},
    # {removed} (documents filters drop; kept for every filter automatically), {run}.
    blocks: List[Any] = field(default_factory=list)
    keep_removed: bool = True  # attach an exclusion writer to every filter that has none
    minhash: Minhash = field(default_factory=Minhash)
    train: Train = field(default_factory=Train)  # kind=pretrain
    launch: Launch = field(default_factory=Launch)  # kind=torchrun
    evaluate: Evaluate = field(default_factory=Evaluate)  # kind=evaluate
    align: Align = field(default_factory=Align)  # kind=align
    serve: Serve = field(default_factory=Serve)  # kind=serve
    fetch: Fetch = field(default_factory=Fetch)  # kind=fetch
    publish: Publish = field(default_factory=Publish)  # kind=publish
    env: Dict[str, str] = field(default_factory=dict)  # extra environment for this stage's tasks
    resources: Resources = field(default_factory=Resources)
    requeue: Requeue = field(default_factory=Requeue)


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
    # run copies it): larger is refused at plan time (launcher/snapshot.py).
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
class Cluster:
    name: str = MISSING
    backend: str = "slurm"  # slurm | local
    description: str = ""
    partition: Optional[str] = None  # default partition for stages that name none
    account: Optional[str] = None
    qos: Optional[str] = None
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
    notify_url: Optional[str] = None  # `launcher schedule`: a webhook POSTed when a scheduled firing fails
    # Hugging Face Hub. Stages reach no hub (HF_HUB_OFFLINE=1) except kind fetch. A stage string
    # `hf://org/name[@revision]` is a repo in hub_cache (HF_HUB_CACHE of every task): the plan adds a
    # fetch stage for them (hub_fetch: auto), or preflight requires them cached (hub_fetch: never).
    hub_cache: Optional[str] = None  # shared cache folder that compute nodes read
    hub_fetch: str = "auto"  # auto | never
    hub_partition: Optional[str] = None  # a partition whose nodes reach the hub (default: the profile's)
    hub_endpoint: Optional[str] = None  # HF_ENDPOINT for fetch and publish (a mirror); default huggingface.co


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
    run_root: str = "runs"  # relative paths are resolved against the current directory
    run_name: Optional[str] = None  # appended to the run id
    wait: bool = False  # block with a live progress table until the run ends
    poll_s: float = 0  # progress refresh (0: 2 s local, 10 s Slurm)


def unknown_key_message(key: str, object_type: type) -> str:
    """OmegaConf's words for a key a structured node does not have ("Key 'x' not in 'Resources'"),
    plus the closest field name (difflib), so a typo names its fix: the same message whether the key
    came from a YAML file, a `key=`, `+key=` or `++key=` override."""
    import dataclasses
    import difflib

    fields = [f.name for f in dataclasses.fields(object_type)]
    near = difflib.get_close_matches(str(key), fields, n=1, cutoff=0.6)
    return f"Key '{key}' not in '{object_type.__name__}'" + (f"; did you mean '{near[0]}'?" if near else "")
