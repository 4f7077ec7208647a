"""kind=pretrain (train a model: nanotron on GPUs, or transformers' Trainer with backend hf) on the
login side: its config section, the arithmetic that must hold before hours in the queue (4D layout,
heads, layers, sequence, vocab, token budget), the estimates `launcher plan` prints, the resolved
training numbers both backends get, and nanotron's YAML written at submission."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from omegaconf import MISSING

from jobs.adapters import tokenizer_files
from jobs.layout import PLACEHOLDER

from launcher.plan.ema import Ema, check_decay
from launcher.errors import ConfigError
from launcher.kinds.base import Kind, Problems
from launcher.config.placeholders import check_placeholders, plain_paths
from launcher.sbatch.options import node_gpus


class TrainBackend(str, Enum):
    nanotron = "nanotron"  # 4D-parallel, multi-node, GPU only (srun + torchrun)
    hf = "hf"  # transformers' Trainer: one process, or DDP under torchrun (dp > 1, CPU or GPUs): small models


class LrSchedule(str, Enum):
    cosine = "cosine"
    linear = "linear"
    wsd = "wsd"  # warmup, stable, then decay over the last `decay_fraction` of the steps


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
    # hf: an exponential moving average of the weights beside each checkpoint (checkpoint-N/ema/), which an
    # evaluation scores beside the raw weights; nanotron has none (refused)
    ema: Ema = field(default_factory=Ema)
    run_train: Optional[str] = None  # nanotron's run_train.py; default $NANOTRON_HOME/run_train.py
    nanotron: Dict[str, Any] = field(default_factory=dict)  # merged into the rendered nanotron YAML last



DEGREES = ("dp", "tp", "pp", "cp", "ep")


def world(par: Dict[str, Any]) -> int:
    """GPUs a layout needs. nanotron lays ranks out as dp x tp x pp x cp; its expert parallelism
    reshapes ranks with ep as one more axis while asserting tp*cp*dp*pp == WORLD_SIZE, so only
    ep=1 satisfies both (checked below)."""
    return par["dp"] * par["tp"] * par["pp"] * par["cp"]


def tokens_per_step(train: Dict[str, Any]) -> int:
    return train["parallelism"]["dp"] * train["micro_batch"] * train["grad_accum"] * train["seq_len"]


def schedule(train: Dict[str, Any]) -> Dict[str, int]:
    """Steps and checkpoint interval, in whole optimizer steps."""
    per_step = tokens_per_step(train)
    every = train["checkpoint_every_tokens"]
    return {"tokens_per_step": per_step, "steps": train["tokens"] // per_step,
            "checkpoint_interval": every // per_step if every else train["tokens"] // per_step}


def param_count(model: Dict[str, Any], vocab: Optional[int]) -> Dict[str, int]:
    """Parameters of a Llama-style decoder: total, and active per token (top-k experts of a MoE)."""
    h, layers = model["hidden_size"], model["num_layers"]
    head_dim = h // model["num_heads"]
    attn = 2 * h * h + 2 * h * model["num_kv_heads"] * head_dim
    if model["num_experts"]:
        expert = 3 * h * (model["moe_intermediate_size"] or model["intermediate_size"])
        mlp_total, mlp_active = model["num_experts"] * expert + h * model["num_experts"], \
            model["experts_top_k"] * expert + h * model["num_experts"]
    else:
        mlp_total = mlp_active = 3 * h * model["intermediate_size"]
    emb = (vocab or 0) * h * (1 if model["tie_embeddings"] else 2)
    return {"total": emb + layers * (attn + mlp_total + 2 * h) + h,
            "active": emb + layers * (attn + mlp_active + 2 * h) + h}


def estimate(train: Dict[str, Any], cluster: Dict[str, Any]) -> Dict[str, Any]:
    """What `launcher plan` shows: tokens per step, steps, parameters, and GPU-hours at the cluster's
    expected MFU (6 x active params x tokens training FLOPs)."""
    s = schedule(train)
    params = param_count(train["model"], train["model"]["vocab_size"])
    flops = 6 * params["active"] * train["tokens"]
    rate = cluster.get("gpu_peak_tflops", 989.0) * 1e12 * cluster.get("expected_mfu", 0.35)
    return {**s, "params": params["total"], "active_params": params["active"], "train_flops": flops,
            "gpu_hours": flops / rate / 3600 if train["backend"] == "nanotron" else 0.0}


def _divisors(n: int) -> List[int]:
    """Divisors of n, for the suggestions in messages (O(sqrt n); none for absurd n, which the
    messages then leave out rather than hang the plan)."""
    if n < 1 or n > 10**12:
        return []
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def _nearest(value: int, candidates: List[int]) -> int | str:
    return min(candidates, key=lambda c: (abs(c - value), c)) if candidates else "?"


def _check_data(data: List[Dict[str, Any]], bad: Callable[[str, str], None]) -> None:
    """train.data: at least one folder; weights >= 0 and not all 0. A weight of 0 lists a folder that is
    not drawn from: a sweep over a source's weight (0 = without it, docs/synthetic.md) keeps the stage's
    `after` edges, which every sweep point shares, and says in result.json that nothing came from it."""
    if not data:
        bad("train.data", "needs at least one tokenized folder ({folder: ..., weight: ...})")
    for i, d in enumerate(data):
        if d["weight"] < 0:
            bad(f"train.data.{i}.weight", f"a sampling weight is >= 0 (0: listed, not drawn), got {d['weight']}")
    if data and all(d["weight"] <= 0 for d in data):
        bad("train.data", "every weight is 0: nothing to draw training samples from; give one folder a weight > 0")


def check_stage(name: str, st: Dict[str, Any], errors: List[ConfigError],
                tokenizer_size: Optional[int] = None) -> None:
    """Every rule of the layout, each error naming its key and a valid setting nearby.
    tokenizer_size: the tokenizer's length when the login node can know it."""
    key = f"pipeline.stages.{name}"
    train, r = st["train"], st["resources"]
    model, par = train["model"], train["parallelism"]

    def bad(sub: str, msg: str) -> None:
        errors.append(ConfigError(msg, stage=name, key=f"{key}.{sub}"))

    if st["tasks"] != 1:
        bad("tasks", f"kind=pretrain trains one model per sweep point: tasks must be 1, got {st['tasks']}")
    for f in ("tokens", "seq_len", "micro_batch", "grad_accum", "log_every_steps"):
        if train[f] < 1:
            bad(f"train.{f}", f"must be >= 1, got {train[f]}")
    for f in DEGREES:
        if par[f] < 1:
            bad(f"train.parallelism.{f}", f"must be >= 1, got {par[f]}")
    for f in ("hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads"):
        if model[f] < 1:
            bad(f"train.model.{f}", f"must be >= 1, got {model[f]}")
    if any(e.stage == name for e in errors):
        return  # the arithmetic below divides by these

    _check_data(train["data"], bad)
    if model["hidden_size"] % model["num_heads"]:
        bad("train.model.num_heads", f"hidden_size {model['hidden_size']} is not divisible by num_heads "
                                     f"{model['num_heads']}")
    if model["num_heads"] % model["num_kv_heads"]:
        bad("train.model.num_kv_heads", f"num_heads {model['num_heads']} is not a multiple of num_kv_heads "
                                        f"{model['num_kv_heads']}; try {_nearest(model['num_kv_heads'], _divisors(model['num_heads']))}")
    if train["seq_len"] > model["max_position_embeddings"]:
        bad("train.seq_len", f"{train['seq_len']} exceeds model.max_position_embeddings "
                             f"({model['max_position_embeddings']})")
    per_step = tokens_per_step(train)
    if train["tokens"] < per_step:
        bad("train.tokens", f"{train['tokens']} tokens is less than one step ({per_step} tokens = dp x micro_batch "
                            f"x grad_accum x seq_len)")
    every = train["checkpoint_every_tokens"]
    if every < 0 or (every and every % per_step):
        near = max(per_step, round(every / per_step) * per_step)
        bad("train.checkpoint_every_tokens", f"{every} is not a whole number of steps of {per_step} tokens; "
                                             f"nearest: {near}")
    _check_optimizer(train, per_step, bad)
    if tokenizer_size is not None and model["vocab_size"] is not None and model["vocab_size"] != tokenizer_size:
        bad("train.model.vocab_size", f"{model['vocab_size']} does not match the tokenizer's {tokenizer_size} tokens "
                                      f"({train['tokenizer']}); set it to {tokenizer_size} (or null for the hf backend)")
    if model["num_experts"] and model["experts_top_k"] > model["num_experts"]:
        bad("train.model.experts_top_k", f"{model['experts_top_k']} > num_experts {model['num_experts']}")

    if train["backend"] == "hf":
        check_decay((train.get("ema") or {}).get("decay"), "train.ema.decay", bad)
        _check_hf_layout(par, r, bad)
        if model["num_experts"]:
            bad("train.model.num_experts", "mixture-of-experts models need backend=nanotron")
        return
    if (train.get("ema") or {}).get("decay") is not None:
        bad("train.ema.decay", "backend=nanotron keeps no moving average of the weights (nanotron's config has "
                               "no such key); use backend=hf, or set train.ema.decay=null")
    _check_nanotron(name, st, bad)


def hf_processes_per_node(par: Dict[str, Any], resources: Dict[str, Any]) -> int:
    """backend=hf: processes torchrun starts per node (DDP, one model replica each): dp / nodes."""
    return max(1, par["dp"] // max(1, resources["nodes"]))


def _check_hf_layout(par: Dict[str, Any], r: Dict[str, Any], bad) -> None:
    """backend=hf is data parallel only (transformers' Trainer under torchrun: DDP, gloo on CPU, NCCL on
    GPUs): dp processes, the same number on every node, one GPU each where the nodes have GPUs."""
    for f in DEGREES[1:]:
        if par[f] != 1:
            bad(f"train.parallelism.{f}", f"backend=hf is data parallel only: {f} must be 1 (got {par[f]}); "
                                          f"use backend=nanotron for tensor, pipeline or context parallelism")
    dp, nodes, gpus = par["dp"], r["nodes"], node_gpus(r)
    if dp % nodes:
        bad("train.parallelism.dp", f"backend=hf starts dp/nodes processes per node: dp={dp} is not a multiple of "
                                    f"nodes={nodes}")
    elif gpus and dp != nodes * gpus:
        bad("train.parallelism.dp", f"backend=hf trains one process per GPU: dp must be nodes x gpus_per_node = "
                                    f"{nodes} x {gpus} = {nodes * gpus} (got {dp})")


def _check_optimizer(train: Dict[str, Any], per_step: int, bad) -> None:
    """What the trainer would refuse on the node, after the job waited in the queue: warmup that does
    not end before training does (jobs/adapters/trainer.py scheduler; nanotron's decay would start after the
    last step), and AdamW's ranges (torch.optim.AdamW: lr, betas in [0, 1), eps, weight decay)."""
    opt = train["optimizer"]
    steps = train["tokens"] // per_step if per_step else 0
    warmup = opt["warmup_steps"]
    if warmup < 0:
        bad("train.optimizer.warmup_steps", f"must be >= 0, got {warmup}")
    elif steps > 1 and warmup >= steps:
        bad("train.optimizer.warmup_steps", f"{warmup} warmup steps, but the run has {steps} steps ({train['tokens']:,} "
                                            f"tokens / {per_step:,} tokens per step): warmup must end before training "
                                            f"does (at most {steps - 1})")
    finite = {k: math.isfinite(opt[k]) for k in ("lr", "min_lr", "beta1", "beta2", "eps", "weight_decay",
                                                 "clip_grad", "decay_fraction")}
    if not (finite["lr"] and opt["lr"] > 0):
        bad("train.optimizer.lr", f"must be a number > 0, got {opt['lr']}")
    elif not (finite["min_lr"] and 0 <= opt["min_lr"] <= opt["lr"]):
        bad("train.optimizer.min_lr", f"must be in [0, lr={opt['lr']}] (the schedule decays to it), got {opt['min_lr']}")
    for k in ("beta1", "beta2"):
        if not (finite[k] and 0 <= opt[k] < 1):
            bad(f"train.optimizer.{k}", f"AdamW needs it in [0, 1), got {opt[k]}")
    for k, lo in (("eps", "> 0"), ("weight_decay", ">= 0"), ("clip_grad", ">= 0")):
        v = opt[k]
        if not (finite[k] and (v > 0 if lo == "> 0" else v >= 0)):
            bad(f"train.optimizer.{k}", f"must be a number {lo}, got {v}")
    if not (finite["decay_fraction"] and 0 <= opt["decay_fraction"] <= 1):
        bad("train.optimizer.decay_fraction", f"a share of the steps: must be in [0, 1], got {opt['decay_fraction']}")


def _check_nanotron(name: str, st: Dict[str, Any], bad) -> None:
    train, r = st["train"], st["resources"]
    model, par = train["model"], train["parallelism"]
    per_node = node_gpus(r)  # gpus_per_node, gres gpu or gpus_per_task x ntasks_per_node
    gpus = r["nodes"] * per_node
    if per_node < 1:
        bad("resources.gpus_per_node", "backend=nanotron needs GPUs (nanotron does not run on CPU)")
        return
    if r["ntasks_per_node"] != 1:
        bad("resources.ntasks_per_node", f"must be 1: one torchrun per node starts the GPU processes "
                                         f"(got {r['ntasks_per_node']})")
    if world(par) != gpus:
        others = par["tp"] * par["pp"] * par["cp"]
        hint = (f"dp={gpus // others}" if gpus % others == 0 else
                f"nodes={-(-world(par) // per_node)} (and dp so the product fits)")
        bad("train.parallelism.dp", f"dp*tp*pp*cp = {par['dp']}*{par['tp']}*{par['pp']}*{par['cp']} = {world(par)} "
                                    f"but the stage has {r['nodes']} node(s) x {per_node} GPU(s) = {gpus}; "
                                    f"try {hint}")
    tp_ok = [d for d in _divisors(model["num_kv_heads"]) if model["num_heads"] % d == 0 and gpus % d == 0]
    if model["num_heads"] % par["tp"] or model["num_kv_heads"] % par["tp"]:
        bad("train.parallelism.tp", f"tp={par['tp']} must divide num_heads ({model['num_heads']}) and num_kv_heads "
                                    f"({model['num_kv_heads']}); nearest valid: tp={_nearest(par['tp'], tp_ok)}")
    if par["pp"] > model["num_layers"]:
        bad("train.parallelism.pp", f"pp={par['pp']} is more pipeline stages than layers ({model['num_layers']}); "
                                    f"nearest valid: pp={_nearest(par['pp'], [d for d in _divisors(gpus) if d <= model['num_layers']])}")
    if train["seq_len"] % par["cp"]:
        bad("train.parallelism.cp", f"seq_len {train['seq_len']} is not divisible by cp={par['cp']}; nearest valid: "
                                    f"cp={_nearest(par['cp'], [d for d in _divisors(train['seq_len']) if gpus % d == 0])}")
    elif par["cp"] > 1 and train["seq_len"] % (2 * par["cp"]):
        bad("train.parallelism.cp", f"nanotron's ring attention needs seq_len divisible by 2*cp = {2 * par['cp']} "
                                    f"(seq_len {train['seq_len']})")
    elif par["cp"] > 1:
        bad("train.parallelism.cp", "nanotron (HEAD 2411b02) raises NotImplementedError when it initialises a model "
                                    "with context parallelism from scratch; use cp=1")
    if par["ep"] != 1:
        bad("train.parallelism.ep", "nanotron asserts tp*cp*dp*pp == WORLD_SIZE and lays ranks out with ep as "
                                    "an extra axis, so only ep=1 runs; experts are then replicated per rank")
    if model["num_experts"] and model["num_experts"] % par["ep"]:
        bad("train.parallelism.ep", f"num_experts {model['num_experts']} is not divisible by ep={par['ep']}")
    if par["pp_engine"] not in ("1f1b", "afab"):
        bad("train.parallelism.pp_engine", f"must be 1f1b or afab, got {par['pp_engine']!r}")
    if par["tp_mode"] not in ("ALL_REDUCE", "REDUCE_SCATTER"):
        bad("train.parallelism.tp_mode", f"must be ALL_REDUCE or REDUCE_SCATTER, got {par['tp_mode']!r}")
    if model["vocab_size"] is None:
        bad("train.model.vocab_size", "backend=nanotron needs the vocabulary size (nanotron asserts it equals "
                                      "len(tokenizer)); set it to the tokenizer's length")
    elif model["vocab_size"] % par["tp"]:
        bad("train.model.vocab_size", f"{model['vocab_size']} is not divisible by tp={par['tp']} (nanotron shards "
                                      f"the embedding across tp ranks)")
    if train["optimizer"]["zero_stage"] not in (0, 1):
        bad("train.optimizer.zero_stage", f"nanotron supports 0 or 1, got {train['optimizer']['zero_stage']}")


def local_inputs(name: str, payload: Dict[str, Any]) -> List[tuple]:
    """(config key, path) of the tokenized folders and tokenizer that are plain paths (no placeholder)."""
    key, train = f"pipeline.stages.{name}.train", payload["train"]
    pairs = [(f"{key}.data.{i}.folder", d["folder"]) for i, d in enumerate(train["data"])]
    pairs.append((f"{key}.tokenizer", train["tokenizer"]))
    return plain_paths(pairs)


def tokenizer_size(path: str) -> Optional[int]:
    """len(tokenizer) of a local tokenizer.json (or a folder with one); None when the login node
    cannot know it (the path names a stage's output, or does not exist yet)."""
    if PLACEHOLDER.search(path):
        return None
    try:
        return tokenizer_files.size(path)
    except (OSError, ValueError):
        return None


def describe(name: str, train: Dict[str, Any], resources: Dict[str, Any], est: Dict[str, Any]) -> str:
    """One paragraph per training stage for `launcher plan`."""
    par, model = train["parallelism"], train["model"]
    layout = " ".join(f"{d}={par[d]}" for d in DEGREES)
    lines = [f"{name}: {train['backend']} {model['name']} ({_human(est['params'])} params"
             + (f", {_human(est['active_params'])} active" if est["active_params"] != est["params"] else "")
             + (" + embeddings: vocab from the tokenizer" if model["vocab_size"] is None else "") + ")",
             f"  layout {layout} on {resources['nodes']} node(s) x {node_gpus(resources)} GPU(s)",
             f"  {est['tokens_per_step']:,} tokens/step (dp {par['dp']} x micro_batch {train['micro_batch']} x "
             f"grad_accum {train['grad_accum']} x seq_len {train['seq_len']}), {est['steps']:,} steps, "
             f"{_human(train['tokens'])} tokens, checkpoint every {est['checkpoint_interval']:,} steps"]
    if train["backend"] == "nanotron":
        lines.append(f"  ~{est['gpu_hours']:,.1f} GPU-hours ({est['train_flops']:.2e} FLOPs)")
    if (train.get("ema") or {}).get("decay"):
        lines.append(f"  EMA of the weights (decay {train['ema']['decay']}) beside each checkpoint (docs/ema.md)")
    return "\n".join(lines)


def _human(n: float) -> str:
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(int(n)) if n == math.floor(n) else f"{n:.3g}"


def nanotron_configs(plan, stage, run_dir: Path, run_id: str) -> Dict[int, str]:
    """backend nanotron: nanotron's YAML of each sweep point (its task), with the checkpoints folder
    as resume_checkpoint_path so every requeue resumes from latest.txt."""
    from jobs import layout
    from jobs.adapters import nanotron as jobs_nanotron
    from jobs.adapters import tracking as jobs_tracking

    from launcher.plan import nanotron_config
    from launcher.plan.render import stage_spec

    spec = stage_spec(plan, stage, run_dir, run_id)
    out = {}
    for point, payload in enumerate(stage.payloads):
        train = payload["train"]
        data, _ = jobs_nanotron.inputs(spec, point, train)
        work = layout.nanotron_dir(run_dir, stage.name, point)
        sched = schedule(train)
        wandb = (spec.get("tracking") or {}).get("backend") == "wandb"  # nanotron's project is W&B's
        cfg = nanotron_config.render(
            train, project=jobs_tracking.project(spec) if wandb else plan.pipeline, run=f"{run_id}.{stage.name}.{point}",
            checkpoints=str(layout.checkpoint_dir(run_dir, stage.name, point * stage.tasks_per_point)),
            tokenizer=str(work / "tokenizer"),
            data={str(view): w for view, w in zip(jobs_nanotron.view_folders(work, len(data)), data.values())},
            steps=sched["steps"], checkpoint_interval=sched["checkpoint_interval"])
        out[point] = nanotron_config.to_yaml(cfg)
    return out


class Pretrain(Kind):
    name = "pretrain"
    section, schema = "train", Train
    payload_keys = ("train",)
    hang_watchdog = True
    health_imports = ("torch",)
    reads_stage_outputs = True
    # jobs/adapters/trainer.py reads none of the nanotron ones; launcher/plan/nanotron_config.py renders all of them.
    only_for = {"train": [
        ("backend", {"nanotron": ("parallelism.pp_engine", "parallelism.tp_mode", "parallelism.tp_async",
                                  "parallelism.recompute_layer", "optimizer.zero_stage", "run_train", "nanotron"),
                     "hf": ()}),
        ("optimizer.schedule", {"wsd": ("optimizer.decay_fraction",), "cosine": (), "linear": ()})]}

    def multi_process(self, st: Dict[str, Any]) -> bool:
        # torchrun on every node: nanotron always, hf when data parallel (DDP); else hf trains in-process
        return st["train"]["backend"] == "nanotron" or st["train"]["parallelism"]["dp"] > 1

    def tracks(self, st: Dict[str, Any]) -> Tuple[str, ...]:
        # transformers' report_to integrations; nanotron logs to W&B by itself (docs/tracking.md)
        return ("tensorboard", "wandb", "mlflow") if st["train"]["backend"] == "hf" else ("wandb",)

    def whole_model_checkpoints(self, st: Dict[str, Any]) -> bool:
        return st["train"]["backend"] == "hf"  # nanotron's checkpoints need a convert stage first

    def retains_checkpoints(self, st: Dict[str, Any]) -> bool:
        return st["train"]["backend"] == "hf"  # nanotron keeps <step>/ + latest.txt, its own layout

    def checkpoint_runs(self, plan, stage) -> Dict[str, List[Any]]:
        return {"seeds": [p["train"]["seed"] for p in stage.payloads],
                "schedules": [schedule(p["train"]) for p in stage.payloads]}

    def sweep_keys(self):
        return ("train.backend", "train.parallelism")  # how the job is launched (srun/torchrun or not)

    def check_in_dag(self, p: Problems, st, stages, ancestors) -> None:
        from launcher.config.schema import Model

        defaults = asdict(Model())
        train = st["train"]
        model = train["model"] if isinstance(train["model"], dict) else {}
        unknown = sorted(set(model) - set(defaults))
        if unknown or not model:
            p.add("train.model", f"must be a model mapping (keys: {', '.join(defaults)}); unknown: "
                                 f"{', '.join(unknown) or repr(train['model'])}")
            return
        train["model"] = {**defaults, **model}  # an inline model gets the preset defaults it omits
        strings = [(f"{p.key}.train.data.{i}.folder", d["folder"]) for i, d in enumerate(train["data"])]
        strings.append((f"{p.key}.train.tokenizer", train["tokenizer"]))
        check_placeholders(p.stage, st, strings, ancestors, p.errors)
        check_stage(p.stage, st, p.errors, tokenizer_size(train["tokenizer"]))

    def spec_extra(self, plan, stage) -> Dict[str, Any]:
        return {"schedules": [schedule(p["train"]) for p in stage.payloads],
                "overrides": plan.points}  # each run's overrides (data=raw seed=2), into its result

    def files(self, plan, stage, run_dir: Path, run_id: str) -> Dict[Path, str]:
        if stage.payloads[0]["train"]["backend"] != "nanotron":
            return {}
        from jobs import layout

        return {layout.nanotron_dir(run_dir, stage.name, point) / "config.yaml": text
                for point, text in nanotron_configs(plan, stage, run_dir, run_id).items()}

    def preflight(self, plan, stage) -> List[ConfigError]:
        import os

        errors = []
        for key, path in dict.fromkeys(kp for p in stage.payloads for kp in local_inputs(stage.name, p)):
            if not os.path.exists(path):
                errors.append(ConfigError(f"{path} does not exist", stage=stage.name, key=key))
            elif key.endswith(".folder") and next(Path(path).rglob("*.ds"), None) is None:
                errors.append(ConfigError(f"{path} holds no tokenized *.ds files (the output of datatrove's "
                                          f"DocumentTokenizer or DocumentTokenizerMerger)", stage=stage.name, key=key))
        return errors

    def describe(self, plan, stage, plan_dir: Path) -> List[str]:
        """Layout, tokens/step, steps and estimated GPU-hours of each sweep point (points that train
        the same shape: once)."""
        out, seen = [], set()
        for point, payload in enumerate(stage.payloads):
            train = payload["train"]
            text = describe(stage.name + (f" (point {point}: {' '.join(plan.points[point])})" if stage.points > 1
                                          else ""), train, stage.point_resources(point), estimate(train, plan.cluster))
            if text.split("\n", 1)[1] not in seen:
                seen.add(text.split("\n", 1)[1])
                out.append(text)
        return out


KIND = Pretrain()
