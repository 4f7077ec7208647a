"""kind=align (TRL) and kind=serve (vLLM) on the login side: the checks that must hold before the
queue, the accelerate config each align task is launched with, and what preflight resolves in the
stage's environment. Pure functions over plain config dicts; no stage library is imported here."""
from __future__ import annotations

import difflib
from typing import Any, Dict, List, Tuple

from jobs.adapters.trl import COLUMNS, TRAINERS
from jobs.runtime import templating
from jobs.layout import PLACEHOLDER

from launcher.errors import ConfigError

# The trainers (jobs/adapters/trl.py TRAINERS: name -> TRL trainer and config class; COLUMNS: what each
# jsonl line holds). A reward or GRPO trainer is one entry there and one line format here.
LINE_FORMAT = {
    "sft": '{"messages": [{"role": "user", "content": ...}, {"role": "assistant", ...}]}',
    "dpo": '{"prompt": [messages], "chosen": [messages], "rejected": [messages]}',
}


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
    gpus = r["gpus_per_node"]
    if gpus == 0 and r["nodes"] > 1:
        bad("resources.nodes", f"{r['nodes']} nodes without GPUs: multi-node alignment needs GPUs (gpus_per_node)")
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


def check_serve(name: str, st: Dict[str, Any], errors: List[ConfigError]) -> None:
    key, s, r = f"pipeline.stages.{name}", st["serve"], st["resources"]

    def bad(sub: str, msg: str) -> None:
        errors.append(ConfigError(msg, stage=name, key=f"{key}.{sub}"))

    tp, gpus = s["tensor_parallel"], r["gpus_per_node"]
    if tp < 1:
        bad("serve.tensor_parallel", f"must be >= 1, got {tp}")
    elif gpus and tp > gpus:
        bad("serve.tensor_parallel", f"{tp} GPUs per server but resources.gpus_per_node is {gpus}: use "
                                     f"tensor_parallel <= {gpus}")
    elif not gpus and tp != 1:
        bad("serve.tensor_parallel", f"{tp} without GPUs: CPU serving runs one process (tensor_parallel=1)")
    if r["nodes"] != 1:
        bad("resources.nodes", f"one server runs on one node, got {r['nodes']}")
    if st["tasks"] != 1:
        bad("tasks", f"must be 1 (one server per sweep point), got {st['tasks']}")
    if not 1024 <= s["port_base"] <= 55535:
        bad("serve.port_base", f"must be in 1024..55535 (ports base..base+9999 are tried), got {s['port_base']}")
    if s["ready_timeout_s"] <= 0:
        bad("serve.ready_timeout_s", f"must be > 0, got {s['ready_timeout_s']}")


def check_clients(stages: Dict[str, Dict[str, Any]], errors: List[ConfigError]) -> None:
    """A stage that uses a server must start while it serves: edge `after` (starts with the server, then
    waits for its endpoint). afterok would wait for the server to stop."""
    for name, st in stages.items():
        for parent, edge in st["after"].items():
            if stages.get(parent, {}).get("kind") == "serve" and edge != "after":
                errors.append(ConfigError(
                    f"'{parent}' is a server: wait on it with `after` (the stage starts with the server and gets "
                    f"its endpoint once published); {edge} would wait until the server has stopped",
                    stage=name, key=f"pipeline.stages.{name}.after.{parent}"))


def servers_of(stages: Dict[str, Any], name: str) -> List[str]:
    """The serve stages `name` is a client of."""
    return [p for p, e in stages[name]["after"].items() if stages.get(p, {}).get("kind") == "serve" and e == "after"]


def placeholder_strings(name: str, st: Dict[str, Any]) -> List[Tuple[str, str]]:
    key = f"pipeline.stages.{name}"
    if st["kind"] == "align":
        pairs = [(f"{key}.align.model", st["align"]["model"]), (f"{key}.align.data", st["align"]["data"] or ""),
                 (f"{key}.align.chat_template", st["align"]["chat_template"] or "")]
    else:
        pairs = [(f"{key}.serve.model", st["serve"]["model"])]
    return pairs


def local_inputs(name: str, kind: str, payload: Dict[str, Any]) -> List[Tuple[str, str]]:
    """(config key, path) of the model, data and template paths that are plain paths (no placeholder);
    the built-in chat template name aside."""
    pairs = placeholder_strings(name, {"kind": kind, **payload})
    return [(k, p) for k, p in pairs if p and p != "builtin" and not PLACEHOLDER.search(p) and "://" not in p]


def targets(name: str, kind: str, payload: Dict[str, Any]) -> List[Tuple[str, str]]:
    """(config key, target) that must resolve in the stage's environment before anything is queued."""
    key = f"pipeline.stages.{name}"
    if kind == "serve":
        return [(f"{key}.serve", "vllm.entrypoints.openai.api_server:run_server")]
    a = payload["align"]
    out = [(f"{key}.align.trainer", "trl." + TRAINERS.get(a["trainer"], TRAINERS["sft"])[0]),
           (f"{key}.align", "accelerate.commands.launch:launch_command")]
    if a["lora"]["enabled"]:
        out.append((f"{key}.align.lora.enabled", "peft.LoraConfig"))
    if a["lora"]["qlora"]:
        out.append((f"{key}.align.lora.qlora", "bitsandbytes.nn.Linear4bit"))
    if a["deepspeed_zero"] is not None:
        out.append((f"{key}.align.deepspeed_zero", "deepspeed.initialize"))
    return out


def accelerate_config(align: Dict[str, Any], resources: Dict[str, Any]) -> Dict[str, Any]:
    """accelerate's launch config for one align stage. Per node at launch time (jobs/kinds/align.py):
    --machine_rank (SLURM_NODEID), --main_process_ip (the allocation's first node), --main_process_port."""
    gpus, nodes = resources["gpus_per_node"], resources["nodes"]
    nproc = align["nproc_per_node"] or gpus or 1
    bf16 = gpus and str(align["dtype"]).lower() in ("bfloat16", "bf16")
    fp16 = gpus and str(align["dtype"]).lower() in ("float16", "fp16")
    cfg: Dict[str, Any] = templating.yaml_defaults("accelerate_defaults.yaml")  # the fixed keys, in order
    cfg.update({"num_machines": nodes, "num_processes": nodes * nproc, "use_cpu": not gpus,
                "mixed_precision": "bf16" if bf16 else "fp16" if fp16 else "no",
                "distributed_type": "NO" if nodes * nproc == 1 else "MULTI_GPU"})
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
    missing, a model folder has no config.json, or the data's first line lacks the trainer's columns."""
    import json
    import os

    if not os.path.exists(path):
        return f"{path} does not exist"
    if key.endswith(".model") and not os.path.isfile(os.path.join(path, "config.json")):
        return f"{path} is not a Hugging Face model folder (no config.json)"
    if key.endswith(".align.data"):
        trainer = payload["align"]["trainer"]
        try:
            with open(path, encoding="utf-8") as f:
                first = json.loads(f.readline() or "null")
        except (OSError, ValueError) as e:
            return f"{path} is not jsonl: {e}"
        need = COLUMNS.get(trainer, ())
        missing = [c for c in need if not isinstance(first, dict) or c not in first]
        if missing:
            return (f"{path}: the first line has no {', '.join(missing)}; trainer {trainer} reads lines like "
                    f"{LINE_FORMAT[trainer]}")
    return ""


def describe(name: str, kind: str, payload: Dict[str, Any], resources: Dict[str, Any], clients: List[str]) -> str:
    """One paragraph per align or serve stage for `launcher plan`."""
    if kind == "serve":
        s = payload["serve"]
        until = " or ".join(filter(None, [f"{', '.join(clients)} ended" if clients else "",
                                           f"{s['serve_s']:g} s" if s["serve_s"] else ""])) or "its time limit"
        return (f"{name}: vLLM serving {s['model']} as {s['served_model_name'] or name!r}, tensor_parallel "
                f"{s['tensor_parallel']} on {resources['gpus_per_node']} GPU(s); port {s['port_base']} + job id % "
                f"10000 (first free); ready = /health + a test completion within {s['ready_timeout_s']:g} s; "
                f"serves until {until}")
    a, cfg = payload["align"], accelerate_config(payload["align"], resources)
    length = f"{a['max_steps']} steps" if a["max_steps"] else f"{a['epochs']:g} epoch(s)"
    tuning = (f"QLoRA r={a['lora']['r']}" if a["lora"]["qlora"] else f"LoRA r={a['lora']['r']}"
              if a["lora"]["enabled"] else "full fine-tuning")
    return (f"{name}: TRL {a['trainer']} on {a['model']} with {a['data']}: {length}, {tuning}, micro_batch "
            f"{a['micro_batch']} x grad_accum {a['grad_accum']}\n  accelerate: {cfg['num_processes']} process(es) on "
            f"{cfg['num_machines']} node(s), {cfg['distributed_type']}"
            + (f" ZeRO-{a['deepspeed_zero']}" if a["deepspeed_zero"] else "") + f", mixed precision {cfg['mixed_precision']}")
