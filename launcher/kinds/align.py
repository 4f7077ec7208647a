"""kind=align (TRL: SFT, DPO, ... on a Hugging Face model, launched through accelerate) on the login
side: its config section, the checks that must hold before the queue, the accelerate config each
task is launched with (written at submission), and what preflight reads and resolves in the stage's
environment. No stage library is imported here."""
from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from jobs.adapters.trl import COLUMNS, SET_BY_STAGE, TRAINERS
from jobs.runtime import templating
from jobs.layout import PLACEHOLDER

from launcher.plan.ema import Ema, check_decay
from launcher.errors import ConfigError
from launcher.kinds.base import DATA_CHECK_MAX_BYTES, Kind, Problems
from launcher.config.placeholders import check_placeholders
from launcher.sbatch.options import node_gpus

# What only the sampling trainers read (launcher/plan/ignored.py refuses it on the others).
SAMPLING = ("rewards", "num_generations", "max_completion_length")


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

    trainer: str = "sft"  # sft | dpo | reward | grpo | rloo (jobs/adapters/trl.py TRAINERS)
    model: str = "{input}/model"  # HF folder: a parent's output ({input}, {input:<stage>}) or a path
    # jsonl: sft {"messages": [{role, content}, ...]}; dpo and reward {"prompt": [...], "chosen": [...],
    # "rejected": [...]} (reward: prompt optional); grpo and rloo {"prompt": [...]} (LINE_FORMAT below)
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
    # grpo/rloo: the reward functions, summed: [{model: <reward model folder, e.g. "{input:reward}/model">},
    # {callable: "package.module:function"}]; a function gets TRL's reward arguments (prompts, completions,
    # completion_ids, the data's other columns) and returns one float per completion
    rewards: List[Any] = field(default_factory=list)
    num_generations: int = 4  # grpo/rloo: completions sampled per prompt (the group advantages compare)
    max_completion_length: int = 64  # grpo/rloo: tokens per sampled completion
    seed: int = "${seed}"  # type: ignore[assignment]
    dtype: str = "bfloat16"  # on CPU training runs in float32
    lora: Lora = field(default_factory=Lora)
    ema: Ema = field(default_factory=Ema)
    deepspeed_zero: Optional[int] = None  # 1, 2 or 3: DeepSpeed ZeRO through accelerate (GPU)
    nproc_per_node: Optional[int] = None  # default: resources.gpus_per_node, or 1 without GPUs
    log_every_steps: int = 5
    trl: Dict[str, Any] = field(default_factory=dict)  # more arguments for the trainer's config (SFTConfig, ...)


# The trainers (jobs/adapters/trl.py TRAINERS: name -> TRL trainer and config class; COLUMNS: what each
# jsonl line holds). A new trainer is one entry there and one line format here.
LINE_FORMAT = {
    "sft": '{"messages": [{"role": "user", "content": ...}, {"role": "assistant", ...}]}',
    "dpo": '{"prompt": [messages], "chosen": [messages], "rejected": [messages]}',
    "reward": '{"prompt": [messages] (optional), "chosen": [messages], "rejected": [messages]}',
    "grpo": '{"prompt": [messages]} or {"prompt": "text"}',
    "rloo": '{"prompt": [messages]} or {"prompt": "text"}',
}
# The trainers that sample completions and score them with align.rewards.
ONLINE = ("grpo", "rloo")
# A callable reward: 'package.module:function' (jobs/runtime/targets.py resolves it in the stage's environment).
CALLABLE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def check_align(name: str, st: Dict[str, Any], errors: List[ConfigError]) -> None:
    key, a, r = f"pipeline.stages.{name}", st["align"], st["resources"]

    def bad(sub: str, msg: str) -> None:
        errors.append(ConfigError(msg, stage=name, key=f"{key}.{sub}"))

    if a["trainer"] not in TRAINERS:
        near = difflib.get_close_matches(a["trainer"], TRAINERS, n=1)
        bad("align.trainer", f"unknown trainer {a['trainer']!r} ({', '.join(TRAINERS)})"
            + (f"; did you mean {near[0]!r}?" if near else ""))
    if not a["data"]:
        hint = LINE_FORMAT.get(a["trainer"], "one example per line")
        bad("align.data", f"kind=align needs align.data: a jsonl file, each line {hint}")
    if st["tasks"] != 1:
        bad("tasks", f"must be 1 (one training run per sweep point; accelerate starts the processes), got {st['tasks']}")
    if r["ntasks_per_node"] != 1:
        bad("resources.ntasks_per_node", "must be 1: one `accelerate launch` per node starts the processes "
                                         "(align.nproc_per_node)")
    gpus = node_gpus(r)  # gpus_per_node, gres gpu or gpus_per_task x ntasks_per_node
    nproc = a["nproc_per_node"]
    if nproc is not None and (nproc < 1 or (gpus and nproc > gpus) or (not gpus and nproc != 1)):
        bad("align.nproc_per_node", f"{nproc} process(es) per node with {gpus} GPU(s) per node: use 1.."
                                    f"{gpus} (one process per GPU), or 1 on CPU")
    if a["lora"]["qlora"]:
        if not a["lora"]["enabled"]:
            bad("align.lora.qlora", "QLoRA trains LoRA adapters on a 4-bit base: set align.lora.enabled=true too")
        if not gpus:
            bad("align.lora.qlora", "QLoRA needs a GPU (bitsandbytes 4-bit kernels); resources.gpus_per_node is 0")
    if a["lora"]["enabled"] and a["lora"]["r"] < 1:
        bad("align.lora.r", f"must be >= 1, got {a['lora']['r']}")
    if a["deepspeed_zero"] is not None:
        if a["deepspeed_zero"] not in (1, 2, 3):
            bad("align.deepspeed_zero", f"ZeRO stage 1, 2 or 3 (or null), got {a['deepspeed_zero']}")
        elif not gpus:
            bad("align.deepspeed_zero", "DeepSpeed needs GPUs; resources.gpus_per_node is 0")
    for k in ("max_length", "micro_batch", "grad_accum"):
        if a[k] < 1:
            bad(f"align.{k}", f"must be >= 1, got {a[k]}")
    if a["max_steps"] is None and a["epochs"] <= 0:
        bad("align.epochs", f"must be > 0 (or set align.max_steps), got {a['epochs']}")
    if a["max_steps"] is not None and a["max_steps"] < 1:
        bad("align.max_steps", f"must be >= 1 or null, got {a['max_steps']}")
    if a["checkpoint_every_steps"] < 0:
        bad("align.checkpoint_every_steps", f"must be >= 0, got {a['checkpoint_every_steps']}")
    # What the trainer (transformers' TrainingArguments, torch's AdamW, peft) would refuse on the node.
    if not (math.isfinite(a["lr"]) and a["lr"] > 0):
        bad("align.lr", f"must be a number > 0, got {a['lr']}")
    if not 0 <= a["warmup_ratio"] < 1:
        bad("align.warmup_ratio", f"a share of the steps: must be in [0, 1), got {a['warmup_ratio']}")
    if a["trainer"] == "dpo" and not (math.isfinite(a["beta"]) and a["beta"] > 0):
        bad("align.beta", f"must be a number > 0, got {a['beta']}")
    check_sampling(a, r, bad)
    check_ema(a, (a.get("ema") or {}).get("decay"), bad)
    if a["lora"]["enabled"] and not 0 <= a["lora"]["dropout"] < 1:
        bad("align.lora.dropout", f"must be in [0, 1), got {a['lora']['dropout']}")
    for k in a["trl"]:
        if k in SET_BY_STAGE:
            own = {"learning_rate": "lr", "num_train_epochs": "epochs", "per_device_train_batch_size": "micro_batch",
                   "gradient_accumulation_steps": "grad_accum", "warmup_steps": "warmup_ratio",
                   "logging_steps": "log_every_steps", "save_steps": "checkpoint_every_steps"}.get(k, k)
            hint = f"set align.{own}" if own in a else "the launcher sets it"
            bad(f"align.trl.{k}", f"{k} is set by the stage itself ({hint}); given twice, the trainer's config "
                                  f"would fail on the node")


def check_ema(a: Dict[str, Any], decay: Any, bad) -> None:
    """align.ema.decay: null (off), or a share in (0, 1) of a whole model's weights on every process."""
    if not check_decay(decay, "align.ema.decay", bad):
        return
    if a["lora"]["enabled"]:
        bad("align.ema.decay", "the average is of the whole model's weights; with LoRA only the adapters "
                               "train: set align.lora.enabled=false or align.ema.decay=null")
    elif a["deepspeed_zero"] == 3:
        bad("align.ema.decay", "ZeRO-3 shards the weights across processes; the average needs them whole "
                               "(use deepspeed_zero 1 or 2)")


def check_sampling(a: Dict[str, Any], r: Dict[str, Any], bad) -> None:
    """GRPO/RLOO: what TRL's GRPOConfig/RLOOConfig would refuse on the node. The generation batch
    (micro_batch x grad_accum x processes, TRL's default steps_per_generation = grad_accum) holds whole
    groups of num_generations completions of one prompt. Other trainers: nothing to check."""
    if a["trainer"] not in ONLINE:
        return
    n = a["num_generations"]
    if n < 2:
        bad("align.num_generations", f"must be >= 2 ({a['trainer']} compares the completions of one prompt with "
                                     f"each other), got {n}")
    elif (batch := a["micro_batch"] * a["grad_accum"] * r["nodes"]
          * (a["nproc_per_node"] or node_gpus(r) or 1)) % n:
        bad("align.num_generations", f"the generation batch (micro_batch x grad_accum x processes = {batch}) must "
                                     f"hold whole groups of {n} completions: make it a multiple of {n}")
    if a["max_completion_length"] < 1:
        bad("align.max_completion_length", f"must be >= 1, got {a['max_completion_length']}")


def reward_entries(a: Dict[str, Any]) -> List[Tuple[int, str, Any]]:
    """(index, 'model' or 'callable', value) of each align.rewards entry of the one form it has."""
    out = []
    for i, e in enumerate(a.get("rewards") or []):
        if isinstance(e, dict) and len(e) == 1 and next(iter(e)) in ("model", "callable"):
            out.append((i, *next(iter(e.items()))))
    return out


def check_rewards(name: str, st: Dict[str, Any], stages: Dict[str, Dict[str, Any]],
                  errors: List[ConfigError]) -> None:
    """align.rewards of a grpo/rloo stage: at least one; each {model: ...} or {callable: 'pkg.mod:fn'};
    a model that is a stage's output ({input}, {input:<stage>}) is a reward stage's (trainer: reward).
    Whether a callable resolves is checked in the stage's environment (targets below)."""
    a, key = st["align"], f"pipeline.stages.{name}.align.rewards"
    if a["trainer"] not in ONLINE:
        return  # set on another trainer: launcher/plan/ignored.py says it would be ignored
    if not a["rewards"]:
        errors.append(ConfigError(f"trainer {a['trainer']} needs at least one reward function: a list of "
                                  f"{{model: <reward model folder, e.g. \"{{input:<reward stage>}}/model\">}} or "
                                  f"{{callable: \"package.module:function\"}}", stage=name, key=key))
        return
    good = {i for i, _, _ in reward_entries(a)}
    for i, e in enumerate(a["rewards"]):
        if i not in good:
            errors.append(ConfigError(f"each reward is {{model: <folder>}} or {{callable: \"package.module:function\"}}"
                                      f" (one key), got {json_short(e)}", stage=name, key=f"{key}.{i}"))
    for i, what, v in reward_entries(a):
        if not isinstance(v, str) or not v:
            errors.append(ConfigError(f"must be a non-empty string, got {json_short(v)}", stage=name,
                                      key=f"{key}.{i}.{what}"))
        elif what == "callable" and not CALLABLE.match(v):
            errors.append(ConfigError(f"{v!r} is not 'package.module:function'", stage=name, key=f"{key}.{i}.callable"))
        elif what == "model":
            for m in PLACEHOLDER.finditer(v):
                kind, ref = m.groups()
                ref = ref or (next(iter(st["after"])) if kind == "input" and len(st["after"]) == 1 else None)
                src = stages.get(ref) if kind == "input" and ref else None
                if src is None:
                    continue  # an unknown or ambiguous reference: check_placeholders says so
                trainer = (src.get("align") or {}).get("trainer") if src.get("kind") == "align" else None
                if trainer != "reward":
                    what_it_is = f"kind={src.get('kind')}" + (f" trainer={trainer}" if trainer else "")
                    errors.append(ConfigError(f"'{ref}' is {what_it_is}, not a reward model: name the output of an "
                                              f"align stage with trainer: reward", stage=name, key=f"{key}.{i}.model"))
                elif ((src["align"].get("lora") or {}).get("qlora")):
                    errors.append(ConfigError(f"'{ref}' trains QLoRA adapters and saves only them (adapter/), not a "
                                              f"reward model folder: set its align.lora.qlora=false",
                                              stage=name, key=f"{key}.{i}.model"))


def placeholder_strings(name: str, st: Dict[str, Any]) -> List[Tuple[str, str]]:
    key = f"pipeline.stages.{name}"
    a = st["align"]
    models = [(f"{key}.align.rewards.{i}.model", v) for i, what, v in reward_entries(a)
              if what == "model" and isinstance(v, str)] if a["trainer"] in ONLINE else []
    return [(f"{key}.align.model", a["model"]), (f"{key}.align.data", a["data"] or ""),
            (f"{key}.align.chat_template", a["chat_template"] or ""), *models]


def local_inputs(name: str, payload: Dict[str, Any]) -> List[Tuple[str, str]]:
    """(config key, path) of the model, data and template paths that are plain paths (no placeholder);
    the built-in chat template name aside."""
    pairs = placeholder_strings(name, payload)
    return [(k, p) for k, p in pairs if p and p != "builtin" and not PLACEHOLDER.search(p) and "://" not in p]


def targets(name: str, payload: Dict[str, Any]) -> List[Tuple[str, str]]:
    """(config key, target) that must resolve in the stage's environment before anything is queued."""
    key = f"pipeline.stages.{name}"
    a = payload["align"]
    out = [(f"{key}.align.trainer", "trl." + TRAINERS.get(a["trainer"], TRAINERS["sft"])[0]),
           (f"{key}.align", "accelerate.commands.launch:launch_command")]
    if a["lora"]["enabled"]:
        out.append((f"{key}.align.lora.enabled", "peft.LoraConfig"))
    if a["lora"]["qlora"]:
        out.append((f"{key}.align.lora.qlora", "bitsandbytes.nn.Linear4bit"))
    if a["deepspeed_zero"] is not None:
        out.append((f"{key}.align.deepspeed_zero", "deepspeed.initialize"))
    if a["trainer"] in ONLINE:  # imported and found callable in the stage's environment (not here)
        out += [(f"{key}.align.rewards.{i}.callable", v) for i, what, v in reward_entries(a)
                if what == "callable" and isinstance(v, str) and CALLABLE.match(v)]
    config = "trl." + TRAINERS.get(a["trainer"], TRAINERS["sft"])[1]
    out += [(f"{key}.align.trl.{k}", f"{config}#{k}") for k in a.get("trl") or {} if k not in SET_BY_STAGE]
    return out


def accelerate_config(align: Dict[str, Any], resources: Dict[str, Any]) -> Dict[str, Any]:
    """accelerate's launch config for one align stage. Per node at launch time (jobs/kinds/align.py):
    --machine_rank (SLURM_NODEID), --main_process_ip (the allocation's first node), --main_process_port."""
    gpus, nodes = node_gpus(resources), resources["nodes"]
    nproc = align["nproc_per_node"] or gpus or 1
    bf16 = gpus and str(align["dtype"]).lower() in ("bfloat16", "bf16")
    fp16 = gpus and str(align["dtype"]).lower() in ("float16", "fp16")
    cfg: Dict[str, Any] = templating.yaml_defaults("accelerate_defaults.yaml")  # the fixed keys, in order
    cfg.update({"num_machines": nodes, "num_processes": nodes * nproc, "use_cpu": not gpus,
                "mixed_precision": "bf16" if bf16 else "fp16" if fp16 else "no",
                # MULTI_CPU: one process per node, ranks from the environment jobs/kinds/align.py sets
                # (accelerate's CPU launcher leaves them to MPI; accelerate/state.py reads RANK, WORLD_SIZE)
                "distributed_type": "NO" if nodes * nproc == 1 else "MULTI_GPU" if gpus else "MULTI_CPU"})
    unset = [k for k, v in cfg.items() if v is None]
    assert not unset, f"templates/accelerate_defaults.yaml leaves {unset} to the stage, which did not set them"
    if align["deepspeed_zero"] is not None:
        z = int(align["deepspeed_zero"])
        cfg["distributed_type"] = "DEEPSPEED"
        cfg["deepspeed_config"] = {
            "zero_stage": z, "gradient_accumulation_steps": align["grad_accum"], "gradient_clipping": 1.0,
            "offload_optimizer_device": "none", "offload_param_device": "none",
            "zero3_init_flag": z == 3, "zero3_save_16bit_model": z == 3}
    return cfg


def local_input_problem(key: str, path: str, payload: Dict[str, Any]) -> str:
    """Why a plain-path model, data file or chat template cannot be used ('' if it can): it is
    missing, a model folder has no config.json, or a line of the data (every line up to
    DATA_CHECK_MAX_BYTES) is not JSON or lacks the trainer's columns in their shape."""
    import os

    if not os.path.exists(path):
        return f"{path} does not exist"
    if key.endswith(".model") and not os.path.isfile(os.path.join(path, "config.json")):
        return f"{path} is not a Hugging Face model folder (no config.json)"
    if ".rewards." in key and (why := reward_model_problem(path)):
        return why
    if key.endswith(".align.data"):
        return data_problem(path, payload["align"]["trainer"])
    return ""


def reward_model_problem(path: str) -> str:
    """'' if the folder holds a reward model as TRL loads one (a sequence classifier with one label,
    as trainer: reward saves it), else why not."""
    import json
    import os

    try:
        with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
            cfg = json.load(f)
    except (OSError, ValueError) as e:
        return f"{path}/config.json cannot be read: {e}"
    archs = cfg.get("architectures") or []
    labels = cfg.get("num_labels", len(cfg.get("id2label") or {}) or None)
    if not any(str(x).endswith("ForSequenceClassification") for x in archs) or labels not in (None, 1):
        return (f"{path} is not a reward model (architectures {archs}, {labels} label(s)): a sequence "
                f"classifier with one label, as an align stage with trainer: reward saves it")
    return ""


def data_problem(path: str, trainer: str, max_bytes: int = DATA_CHECK_MAX_BYTES) -> str:
    """The first line of a jsonl file that the trainer could not use, and why ('' if none). Blank
    lines are skipped (datasets' json loader does the same); reading stops after max_bytes."""
    import json

    need = COLUMNS.get(trainer, ())
    read, rows = 0, 0
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                read += len(line)
                if read > max_bytes:
                    break
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as e:
                    return f"{path}: line {lineno} is not JSON ({e})"
                rows += 1
                missing = [c for c in need if not isinstance(row, dict) or c not in row]
                if missing:
                    return (f"{path}: line {lineno} has no {', '.join(missing)}; trainer {trainer} reads lines like "
                            f"{LINE_FORMAT[trainer]}")
                for c in need:
                    if why := _column_problem(trainer, row[c]):
                        return f"{path}: line {lineno}: {c!r} {why}; trainer {trainer} reads lines like {LINE_FORMAT[trainer]}"
    except (OSError, UnicodeDecodeError) as e:
        return f"{path} cannot be read as UTF-8 jsonl: {e}"
    return "" if rows else f"{path} has no lines to train on"


def _column_problem(trainer: str, value: Any) -> str:
    """'' if `value` has the shape TRL reads in this column: a list of chat messages ({role, content}),
    or (DPO's prompt, chosen, rejected) a plain string."""
    if isinstance(value, str) and value and trainer != "sft":
        return ""
    if not isinstance(value, list) or not value:
        return "must be a non-empty list of messages" + (" or a string" if trainer != "sft" else "")
    for i, m in enumerate(value):
        if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), (str, list))):
            return f"message {i} must be {{\"role\": <string>, \"content\": <string>}}, got {json_short(m)}"
    return ""


def json_short(v: Any) -> str:
    import json

    text = json.dumps(v, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def describe(name: str, payload: Dict[str, Any], resources: Dict[str, Any]) -> str:
    """One paragraph per align stage for `launcher plan`."""
    a, cfg = payload["align"], accelerate_config(payload["align"], resources)
    length = f"{a['max_steps']} steps" if a["max_steps"] else f"{a['epochs']:g} epoch(s)"
    tuning = (f"QLoRA r={a['lora']['r']}" if a["lora"]["qlora"] else f"LoRA r={a['lora']['r']}"
              if a["lora"]["enabled"] else "full fine-tuning")
    return (f"{name}: TRL {a['trainer']} on {a['model']} with {a['data']}: {length}, {tuning}, micro_batch "
            f"{a['micro_batch']} x grad_accum {a['grad_accum']}\n  accelerate: {cfg['num_processes']} process(es) on "
            f"{cfg['num_machines']} node(s), {cfg['distributed_type']}"
            + (f" ZeRO-{a['deepspeed_zero']}" if a["deepspeed_zero"] else "") + f", mixed precision {cfg['mixed_precision']}"
            + (f"\n  {a['num_generations']} completions of up to {a['max_completion_length']} tokens per prompt, "
               f"scored by " + ", ".join(f"{what} {v}" for _, what, v in reward_entries(a))
               if a["trainer"] in ONLINE else ""))


class AlignKind(Kind):
    name = "align"
    section, schema = "align", Align
    payload_keys = ("align",)
    hang_watchdog = True
    health_imports = ("torch", "trl", "accelerate")
    reads_stage_outputs = True
    only_for = {"align": [
        ("trainer", {"dpo": ("beta", "max_length"), "sft": ("assistant_only_loss", "max_length"),
                     "reward": ("max_length",), "grpo": SAMPLING, "rloo": SAMPLING}),
        ("lora.enabled", {True: ("lora.r", "lora.alpha", "lora.dropout", "lora.target_modules"), False: ()})]}

    def multi_process(self, st: Dict[str, Any]) -> bool:
        return True  # accelerate on every node

    def tracks(self, st: Dict[str, Any]) -> Tuple[str, ...]:
        return ("tensorboard", "wandb", "mlflow")  # TRL's trainers are transformers' Trainer: report_to

    def whole_model_checkpoints(self, st: Dict[str, Any]) -> bool:
        # adapter checkpoints are not models; a reward model's are classifiers, not language models
        return not st["align"]["lora"]["enabled"] and st["align"]["trainer"] != "reward"

    def retains_checkpoints(self, st: Dict[str, Any]) -> bool:
        return True

    def checkpoint_runs(self, plan, stage) -> Dict[str, List[Any]]:
        # tokens come from each checkpoint's marker
        return {"seeds": [p["align"]["seed"] for p in stage.payloads],
                "schedules": [{"tokens_per_step": 0}] * stage.points}

    def check_in_dag(self, p: Problems, st, stages, ancestors) -> None:
        check_align(p.stage, st, p.errors)
        check_rewards(p.stage, st, stages, p.errors)
        check_placeholders(p.stage, st, placeholder_strings(p.stage, st), ancestors, p.errors)

    def files(self, plan, stage, run_dir: Path, run_id: str) -> Dict[Path, str]:
        import yaml

        from jobs import layout

        return {layout.accelerate_config(run_dir, stage.name, point):
                yaml.safe_dump(accelerate_config(payload["align"], stage.point_resources(point)), sort_keys=False)
                for point, payload in enumerate(stage.payloads)}

    def preflight(self, plan, stage) -> List[ConfigError]:
        errors = []
        for payload in stage.payloads:
            for key, path in local_inputs(stage.name, payload):
                if problem := local_input_problem(key, path, payload):
                    errors.append(ConfigError(problem, stage=stage.name, key=key))
        return errors

    def targets(self, stage) -> List[Tuple[str, str]]:
        return [t for p in stage.payloads for t in targets(stage.name, p)]

    def describe(self, plan, stage, plan_dir: Path) -> List[str]:
        return [describe(stage.name, stage.payloads[0], stage.resources)]


KIND = AlignKind()
