"""nanotron's training YAML from a pretrain stage's `train` config: one pure function, no ML imports.

Targets nanotron GitHub HEAD (`nanotron.config.Config`, loaded by dacite with strict=True, so every
key here must be a field of its dataclasses). tests/unit/test_nanotron_config.py loads the golden
renders with nanotron's own `get_config_from_file`.
"""
from __future__ import annotations

import copy
from typing import Any, Dict

import yaml

from jobs.runtime import templating

# Our schedule names -> nanotron's lr_decay_style. WSD decays with "1-sqrt" (the usual WSD cool-down)
# after a constant phase that nanotron expresses as lr_decay_starting_step.
DECAY_STYLE = {"cosine": "cosine", "linear": "linear", "wsd": "1-sqrt"}
DEFAULTS = "nanotron_defaults.yaml"


def render(train: Dict[str, Any], *, project: str, run: str, checkpoints: str, tokenizer: str,
           data: Dict[str, float], steps: int, checkpoint_interval: int) -> Dict[str, Any]:
    """The nanotron config as a plain dict. `checkpoints`: absolute folder; `tokenizer`: absolute
    Hugging Face tokenizer folder; `data`: absolute datatrove-tokenized folders -> weight."""
    # Floats are cast: an int from YAML (lr: 1) passes dacite but nanotron asserts a float learning rate.
    model, opt, par = train["model"], train["optimizer"], train["parallelism"]
    data = {f: w for f, w in data.items() if w > 0}  # weight 0: listed, not drawn (kinds/pretrain.py _check_data)
    total = sum(data.values())
    cfg = {
        "general": {"project": project, "run": run, "seed": train["seed"]},
        "checkpoints": {
            "checkpoints_path": checkpoints,
            # Same folder: each requeue finds latest.txt there and resumes (nothing there yet: from scratch).
            "resume_checkpoint_path": checkpoints,
            "checkpoint_interval": checkpoint_interval,
        },
        "parallelism": {
            "dp": par["dp"], "tp": par["tp"], "pp": par["pp"],
            "context_parallel_size": par["cp"], "expert_parallel_size": par["ep"],
            "pp_engine": par["pp_engine"], "tp_mode": par["tp_mode"],
            # nanotron raises on async communication with ALL_REDUCE.
            "tp_linear_async_communication": bool(par["tp_async"]) and par["tp_mode"] == "REDUCE_SCATTER",
            "recompute_layer": par["recompute_layer"],
        },
        "model": {
            "dtype": train["dtype"],
            "init_method": {"std": float(model["init_std"])},
            "model_config": _model_config(model, par["cp"]),
        },
        "tokenizer": {"tokenizer_name_or_path": tokenizer},
        "tokens": {
            "sequence_length": train["seq_len"],
            "train_steps": steps,
            "micro_batch_size": train["micro_batch"],
            "batch_accumulation_per_replica": train["grad_accum"],
        },
        "optimizer": {
            "zero_stage": opt["zero_stage"],
            "weight_decay": float(opt["weight_decay"]),
            "clip_grad": float(opt["clip_grad"]),
            "optimizer_factory": {"adam_eps": float(opt["eps"]), "adam_beta1": float(opt["beta1"]),
                                  "adam_beta2": float(opt["beta2"])},
            "learning_rate_scheduler": _lr_schedule(opt, steps),
        },
        "logging": {"iteration_step_info_interval": train["log_every_steps"]},
        "data_stages": [{
            "name": "pretrain",
            "start_training_step": 1,  # nanotron requires a stage starting at step 1
            "data": {
                "seed": train["seed"],
                "num_loading_workers": 1,
                # NanosetDatasetsArgs: datatrove DocumentTokenizer/Merger folders (*.ds), read by
                # run_train.py's TokenizedBytes case. tokenizer_name, vocab_size and token size are
                # set explicitly; nanotron asserts they match the folders' *.metadata lines.
                "dataset": {
                    "dataset_folder": list(data),
                    "dataset_weights": [w / total for w in data.values()],
                    "tokenizer_name": tokenizer,
                    "vocab_size": model["vocab_size"],
                    # datatrove's rule: uint16 unless the vocabulary does not fit.
                    "token_size_in_bytes": 4 if model["vocab_size"] > 65536 else 2,
                },
            },
        }],
    }
    # The fixed part (templates/nanotron_defaults.yaml), what the stage decides, then the escape hatch.
    return _merge(_merge(templating.yaml_defaults(DEFAULTS), cfg), train.get("nanotron") or {})


def _model_config(m: Dict[str, Any], cp: int) -> Dict[str, Any]:
    cfg = {
        "hidden_size": m["hidden_size"],
        "intermediate_size": m["intermediate_size"],
        "num_hidden_layers": m["num_layers"],
        "num_attention_heads": m["num_heads"],
        "num_key_value_heads": m["num_kv_heads"],
        "vocab_size": m["vocab_size"],
        "max_position_embeddings": m["max_position_embeddings"],
        "rope_theta": float(m["rope_theta"]),
        "rms_norm_eps": float(m["rms_norm_eps"]),
        "tie_word_embeddings": m["tie_embeddings"],
        "initializer_range": float(m["init_std"]),
        "hidden_act": "silu",
    }
    if not m["num_experts"] and cp == 1:
        return {"is_llama_config": True, **cfg}  # the key is how dacite tells the model classes apart
    # nanotron's Llama has no context parallelism and no experts; its Qwen2 (Llama + options) has both.
    cfg["is_qwen2_config"] = True
    if cp > 1:
        cfg["_attn_implementation"] = "llama3_ring_attention"  # ring attention over the cp group
        cfg["ring_attn_heads_k_stride"] = 1  # must divide the local kv heads: 1 always does
    if m["num_experts"]:
        cfg["moe_config"] = {
            "num_experts": m["num_experts"],
            "top_k": m["experts_top_k"],
            "moe_intermediate_size": m["moe_intermediate_size"] or m["intermediate_size"],
            "enable_shared_expert": False,
            "token_dispatcher_type": "alltoall",
        }
    return cfg


def _lr_schedule(opt: Dict[str, Any], steps: int) -> Dict[str, Any]:
    warmup = opt["warmup_steps"]
    # cosine/linear decay right after warmup; wsd holds the peak until the last decay_fraction of steps.
    start = max(warmup, round(steps * (1 - opt["decay_fraction"]))) if opt["schedule"] == "wsd" else warmup
    return {
        "learning_rate": float(opt["lr"]),
        "min_decay_lr": float(opt["min_lr"]),
        "lr_warmup_steps": warmup,
        "lr_warmup_style": "linear",  # nanotron rejects a missing style
        "lr_decay_style": DECAY_STYLE[opt["schedule"]],
        "lr_decay_starting_step": start,
        # Explicit: nanotron's default (train_steps - warmup) would run past the end for wsd.
        "lr_decay_steps": max(steps - start, 0),
    }


def _merge(base: Dict[str, Any], extra: Dict[str, Any]) -> Dict[str, Any]:
    """Deep merge (dicts recursively, anything else replaced): the `train.nanotron` escape hatch."""
    out = copy.deepcopy(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def to_yaml(cfg: Dict[str, Any]) -> str:
    return yaml.safe_dump(cfg, sort_keys=True, default_flow_style=False, width=120)
