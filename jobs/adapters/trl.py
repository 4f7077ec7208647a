"""The worker of kind=align: one TRL trainer, started on every process by `accelerate launch -m
jobs.adapters.trl` (jobs/kinds/align.py builds that command). What to do comes in LAUNCHER_ALIGN_ORDER (JSON:
the stage's `align` section with its folders filled in, the output, checkpoint and stop-file paths).

- The model folder's tokenizer and its chat template (or the built-in one below, saved with the
  outputs so the served model formats chats the way it was trained).
- Checkpoints `<checkpoint_dir>/checkpoint-N` are marked complete (jobs/runtime/checkpoints.py) after the
  Trainer saved them and the tokenizer joined them: each is a loadable model folder (evaluate scores
  them); a requeued run resumes from the newest complete one (`resume_from_checkpoint`).
- The stop request is a file (jobs.task creates it on the pre-timeout signal): every process checks
  it at each step end, agreed across ranks, so all stop at the same step; the checkpoint is saved and
  marked and the worker exits with STOP_EXIT.
- Outputs (main process): model/ (LoRA merged in; trainer: reward, a sequence classifier with one
  label), metrics.jsonl (the trainer's log), result.json; with align.ema.decay, ema/ (the averaged
  weights, also in each checkpoint: jobs/adapters/ema.py).
- GRPO/RLOO sample completions with transformers' generate on the trained model (no vLLM) and score
  them with align.rewards: reward model folders and Python functions (reward_funcs below).
"""
from __future__ import annotations

import json
import os
import sys
import time
import warnings
from pathlib import Path

from jobs.runtime import checkpoints, retention, stacks, templating
from jobs import layout
from jobs.adapters import ema
from jobs.adapters.trainer_progress import progress_callback
from jobs.adapters import tracking as trackers

STOP_EXIT = 75
# name -> (trainer class, config class) in trl; and the columns each jsonl line must have
TRAINERS = {"sft": ("SFTTrainer", "SFTConfig"), "dpo": ("DPOTrainer", "DPOConfig"),
            "reward": ("RewardTrainer", "RewardConfig"), "grpo": ("GRPOTrainer", "GRPOConfig"),
            "rloo": ("RLOOTrainer", "RLOOConfig")}
COLUMNS = {"sft": ("messages",), "dpo": ("prompt", "chosen", "rejected"), "reward": ("chosen", "rejected"),
           "grpo": ("prompt",), "rloo": ("prompt",)}
# Read when a line has them: the reward trainer puts an explicit prompt before chosen and rejected.
OPTIONAL_COLUMNS = {"reward": ("prompt",)}
# Sample completions and score them with align.rewards (no max_length, no dataset_num_proc in their config).
ONLINE = ("grpo", "rloo")
# The trainer config's arguments that the stage's own fields set (_trainer_config below); align.trl may
# add others but not these (a second value would be a TypeError on the node: preflight refuses it).
SET_BY_STAGE = ("output_dir", "num_train_epochs", "max_steps", "per_device_train_batch_size",
                "gradient_accumulation_steps", "learning_rate", "warmup_steps", "max_length", "logging_steps",
                "save_strategy", "save_steps", "save_total_limit", "seed", "data_seed", "bf16", "fp16", "use_cpu",
                "report_to", "run_name", "disable_tqdm", "dataloader_num_workers", "dataset_num_proc",
                "include_num_input_tokens_seen", "restore_callback_states_from_checkpoint", "assistant_only_loss",
                "beta", "num_generations", "max_completion_length", "use_vllm")
# Used when the tokenizer has no chat template (align.chat_template null) or asked for ("builtin"):
# templates/chat_template.jinja. Its generation tags mark the assistant's tokens (assistant_only_loss);
# every turn ends with EOS.
BUILTIN_CHAT_TEMPLATE = "chat_template.jinja"


def log(msg: str) -> None:
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"[align {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def chat_template(tokenizer, setting: str | None) -> str:
    if setting and setting != "builtin":
        return Path(setting).read_text()
    if setting is None and tokenizer.chat_template:
        return tokenizer.chat_template
    return templating.text(BUILTIN_CHAT_TEMPLATE)


def load_data(path: str, trainer: str, cache: Path):
    import datasets

    ds = datasets.load_dataset("json", data_files=path, split="train", cache_dir=str(cache))
    missing = [c for c in COLUMNS[trainer] if c not in ds.column_names]
    if missing:
        raise ValueError(f"align.data: {path} has columns {ds.column_names}; trainer {trainer} needs "
                         f"{', '.join(COLUMNS[trainer])} (missing {', '.join(missing)})")
    return ds.select_columns(list(COLUMNS[trainer]) + [c for c in OPTIONAL_COLUMNS.get(trainer, ())
                                                       if c in ds.column_names])


def reward_funcs(a: dict) -> list:
    """align.rewards as TRL's reward_funcs: a reward model folder stays a path (TRL loads it as a
    sequence classifier with one label, its tokenizer beside it); 'package.module:function' is imported
    here, in the stage's environment (preflight resolved it already; this names the key if it no longer does)."""
    from jobs.runtime.targets import locate

    funcs = []
    for i, entry in enumerate(a.get("rewards") or []):
        (what, value), = entry.items()
        if what == "model":
            funcs.append(str(value))
            continue
        try:
            fn = locate(value)
        except Exception as e:  # noqa: BLE001 - any import failure is the config's
            raise ValueError(f"align.rewards.{i}.callable: {value!r} does not resolve: {type(e).__name__}: {e}") from e
        if not callable(fn):
            raise ValueError(f"align.rewards.{i}.callable: {value!r} is not a function")
        funcs.append(fn)
    if not funcs:
        raise ValueError(f"align.rewards: trainer {a['trainer']} needs at least one reward function")
    return funcs


def _callback(order: dict, tokenizer, stop_file: Path):
    import torch
    import torch.distributed as dist
    from transformers import TrainerCallback

    every = int(order["align"]["checkpoint_every_steps"] or 0)

    def stop_requested() -> bool:
        flag = stop_file.exists()
        if dist.is_available() and dist.is_initialized():  # every rank stops at the same step
            t = torch.tensor([1.0 if flag else 0.0], device="cuda" if torch.cuda.is_available() else "cpu")
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            flag = bool(t.item())
        return flag

    class AlignCallback(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step < state.max_steps and stop_requested():
                log(f"stop requested at step {state.global_step}/{state.max_steps}: saving checkpoint-"
                    f"{state.global_step}")
                control.should_save = control.should_log = control.should_training_stop = True
            return control

        def on_save(self, args, state, control, **kwargs):
            if dist.is_available() and dist.is_initialized():
                dist.barrier()  # every rank's part of the checkpoint is written
            if not state.is_world_process_zero:
                return control
            step = state.global_step
            path = Path(args.output_dir) / f"checkpoint-{step}"
            tokenizer.save_pretrained(str(path))
            reason = "final" if step >= state.max_steps else "interval" if every and step % every == 0 else "stop"
            loss = next((e["loss"] for e in reversed(state.log_history) if "loss" in e), None)
            checkpoints.mark(path, {"step": step, "tokens": int(state.num_input_tokens_seen or 0) or None,
                                    "loss": loss, "reason": reason, "max_steps": state.max_steps,
                                    "trainer": order["align"]["trainer"]})
            log(f"checkpoint-{step} saved and marked complete ({reason}"
                f"{'' if loss is None else f', loss {loss:.4f}'})")
            retention.prune_by(retention.from_env(), log)  # after the marker: the newest stays
            return control

        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs and "loss" in logs:
                extra = "".join(f", {k} {logs[k]:.4g}" for k in ("rewards/margins", "rewards/accuracies",
                                                                   "mean_token_accuracy", "accuracy", "margin",
                                                                   "reward", "reward_std") if k in logs)
                log(f"step {state.global_step}/{state.max_steps} loss {logs['loss']:.4f}{extra}")
            return control

    return AlignCallback()


def _callbacks(order: dict, tokenizer, stop_file: Path, resume=None) -> list:
    """The EMA of the weights (align.ema.decay; first: its weights join a checkpoint before it is
    marked), the stop/checkpoint callback, then the live progress one (world process zero writes the
    task's progress file, order["progress_file"]; it names a checkpoint only once the first one marked it)."""
    decay = (order["align"].get("ema") or {}).get("decay")
    found = [ema.ema_callback(float(decay), tokenizer, resume[1] if resume else None, log)] if decay else []
    found.append(_callback(order, tokenizer, stop_file))
    if order.get("progress_file"):
        found.append(progress_callback(Path(order["progress_file"])))
    return found


def _precision(a: dict, cuda: bool) -> tuple[bool, bool]:
    """(bf16, fp16) of align.dtype: mixed precision on GPUs only."""
    dtype = str(a["dtype"]).lower()
    return cuda and dtype in ("bfloat16", "bf16"), cuda and dtype in ("float16", "fp16")


def _model(a: dict, cuda: bool, tokenizer=None):
    """(the model, peft's LoraConfig or None): align.model with align.dtype, flash attention when it is
    installed (GPUs), 4-bit for QLoRA. trainer: reward makes a sequence classifier with one label (the
    score) from the causal LM folder: its body, a new scalar head; the pad token marks where each
    sequence ends (the score is read at its last token)."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    bf16, fp16 = _precision(a, cuda)
    model_kwargs: dict = {"dtype": torch.bfloat16 if bf16 else torch.float16 if fp16 else torch.float32}
    if cuda:
        try:
            import flash_attn  # noqa: F401

            model_kwargs["attn_implementation"] = "flash_attention_2"
        except ImportError:
            model_kwargs["attn_implementation"] = "sdpa"
    lora, peft_config = a["lora"], None
    if lora["qlora"]:
        model_kwargs["quantization_config"] = transformers.BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=model_kwargs["dtype"],
            bnb_4bit_use_double_quant=True)
        model_kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}
    if lora["enabled"]:
        from peft import LoraConfig

        peft_config = LoraConfig(r=int(lora["r"]), lora_alpha=int(lora["alpha"]), lora_dropout=float(lora["dropout"]),
                                 target_modules=lora["target_modules"],
                                 task_type="SEQ_CLS" if a["trainer"] == "reward" else "CAUSAL_LM")
    if a["trainer"] != "reward":
        return AutoModelForCausalLM.from_pretrained(a["model"], **model_kwargs), peft_config
    transformers.utils.logging.set_verbosity_error()  # "score.weight newly initialized": it is meant to be
    model = AutoModelForSequenceClassification.from_pretrained(a["model"], num_labels=1, **model_kwargs)
    transformers.utils.logging.set_verbosity_warning()
    if tokenizer is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, peft_config


def _trainer_config(a: dict, kind: str, ckpt_dir: Path, cuda: bool, tracking: dict | None = None):
    """TRL's config of the trainer (SFTConfig, DPOConfig...) from the align section; align.trl adds to it.
    `tracking`: report_to and run_name (jobs/adapters/tracking.py trainer_settings)."""
    tracking = tracking or {}
    import trl

    config_cls = getattr(trl, TRAINERS[kind][1])
    bf16, fp16 = _precision(a, cuda)
    every = int(a["checkpoint_every_steps"] or 0)
    extra: dict = {"sft": {"assistant_only_loss": bool(a["assistant_only_loss"])}, "dpo": {"beta": float(a["beta"])},
                   "reward": {}}.get(kind, {})
    if kind in ONLINE:  # generation with transformers on the trainer's own model (no vLLM server)
        extra = {"num_generations": int(a["num_generations"]),
                 "max_completion_length": int(a["max_completion_length"]), "use_vllm": False}
    else:
        extra.update(max_length=int(a["max_length"]), dataset_num_proc=None)
    return config_cls(
        output_dir=str(ckpt_dir), num_train_epochs=float(a["epochs"]), max_steps=int(a["max_steps"] or -1),
        per_device_train_batch_size=int(a["micro_batch"]), gradient_accumulation_steps=int(a["grad_accum"]),
        learning_rate=float(a["lr"]), warmup_steps=float(a["warmup_ratio"]),
        logging_steps=max(1, int(a["log_every_steps"])), save_strategy="steps", save_steps=every or 10**9,
        save_total_limit=None, seed=int(a["seed"]), data_seed=int(a["seed"]), bf16=bf16, fp16=fp16,
        use_cpu=not cuda, report_to=tracking.get("report_to", "none"), run_name=tracking.get("run_name"),
        disable_tqdm=True, dataloader_num_workers=0,
        include_num_input_tokens_seen=True, restore_callback_states_from_checkpoint=False,
        **extra, **(a.get("trl") or {}))


def _resume(ckpt_dir: Path, rank0: bool):
    """The newest complete checkpoint as (step, path), or None. Rank 0 sets partial checkpoints aside;
    the others take what it took."""
    if rank0:
        return checkpoints.resume_point(ckpt_dir, log)
    complete = checkpoints.scan(ckpt_dir)[0]
    return complete[-1] if complete else None


def _save(trainer, tokenizer, lora: dict, out: Path) -> Path:
    """The trained model (LoRA merged in; QLoRA: the adapter only) and its tokenizer into out/; the
    folder's name."""
    final = trainer.model
    if lora["enabled"] and not lora["qlora"]:
        final = final.merge_and_unload()  # a plain model folder that vLLM and lighteval load
    name = "adapter" if lora["qlora"] else "model"
    out.mkdir(parents=True, exist_ok=True)
    (final if not lora["qlora"] else trainer.model).save_pretrained(str(out / name))
    tokenizer.save_pretrained(str(out / name))
    (out / "metrics.jsonl").write_text("".join(json.dumps(e, default=str) + "\n" for e in trainer.state.log_history))
    return Path(name)


def _result(order: dict, trainer, dataset, resume, ckpt_dir: Path, folder: Path, times: tuple, cuda: bool) -> dict:
    """result.json of the worker: steps, losses, reward margins (DPO; the reward model's own margin and
    accuracy on its training pairs), the mean reward of the sampled completions per logged step
    (GRPO/RLOO: `rewards`, [step, reward]), tokens, times, checkpoints."""
    a, state, (started, t0) = order["align"], trainer.state, times
    history = state.log_history
    margin_key = "margin" if a["trainer"] == "reward" else "rewards/margins"
    margins = [e[margin_key] for e in history if margin_key in e]
    losses = [e["loss"] for e in history if "loss" in e]
    rewards = [[e["step"], e["reward"]] for e in history if "reward" in e and "step" in e]
    accuracies = [e["accuracy"] for e in history if "accuracy" in e]
    # each reward function's own mean (TRL logs rewards/<function or model name>/mean)
    parts = {k.split("/")[1]: [[e["step"], e[k]] for e in history if k in e and "step" in e]
             for k in dict.fromkeys(k for e in history for k in e if k.startswith("rewards/") and k.endswith("/mean"))}
    online = {"rewards": rewards, "first_reward": rewards[0][1] if rewards else None,
              "final_reward": rewards[-1][1] if rewards else None,
              "reward_functions": parts} if a["trainer"] in ONLINE else {}
    if a["trainer"] == "reward":
        online = {"first_accuracy": accuracies[0] if accuracies else None,
                  "final_accuracy": accuracies[-1] if accuracies else None}
    complete, _ = checkpoints.scan(ckpt_dir)
    return {"trainer": a["trainer"], "final_step": state.global_step, "max_steps": state.max_steps,
            "examples": len(dataset), "first_loss": losses[0] if losses else None,
            "final_loss": losses[-1] if losses else None,
            "first_margin": margins[0] if margins else None, "final_margin": margins[-1] if margins else None,
            "tokens": int(state.num_input_tokens_seen or 0), "train_seconds": round(time.time() - t0, 2),
            "seconds": round(time.time() - started, 2), "resumed_from": resume[0] if resume else None,
            "checkpoints": [s for s, _ in complete], "lora": bool(a["lora"]["enabled"]),
            "model_dir": str(Path(order.get("final_output_dir") or order["output_dir"]) / folder),
            "device": "cuda" if cuda else "cpu", "num_processes": trainer.accelerator.num_processes, **online}


def main() -> int:
    if os.environ.get("LAUNCHER_WATCHDOG") == "1":  # the hang watchdog may ask for this rank's stacks
        stacks.register_dump()
    import datasets
    import torch
    import transformers
    import trl
    from transformers import AutoTokenizer, PrinterCallback, ProgressCallback

    # TRL calls transformers APIs that 5.x renamed: one FutureWarning per call, every step
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
    datasets.disable_progress_bars()
    order = json.loads(os.environ["LAUNCHER_ALIGN_ORDER"])
    a, kind = order["align"], order["align"]["trainer"]
    ckpt_dir, out, stop_file = Path(order["checkpoint_dir"]), Path(order["output_dir"]), Path(order["stop_file"])
    rank0 = int(os.environ.get("RANK", "0")) == 0
    transformers.utils.logging.disable_progress_bar()
    cuda = torch.cuda.is_available()
    if not cuda and os.environ.get("SLURM_CPUS_PER_TASK"):
        torch.set_num_threads(max(1, int(os.environ["SLURM_CPUS_PER_TASK"])))
    started = time.time()

    tokenizer = AutoTokenizer.from_pretrained(a["model"])
    tokenizer.chat_template = chat_template(tokenizer, a["chat_template"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    dataset = load_data(a["data"], kind, ckpt_dir / "datasets-cache")
    model, peft_config = _model(a, cuda, tokenizer)
    tracking = order.get("tracking") or {}
    os.environ.update(tracking.get("env") or {})  # read by transformers' tracker callback as it is built
    config = _trainer_config(a, kind, ckpt_dir, cuda, tracking)
    resume = _resume(ckpt_dir, rank0)
    online = {"reward_funcs": reward_funcs(a)} if kind in ONLINE else {}
    trainer = getattr(trl, TRAINERS[kind][0])(model=model, args=config, train_dataset=dataset,
                                              processing_class=tokenizer, peft_config=peft_config,
                                              callbacks=_callbacks(order, tokenizer, stop_file, resume)
                                              + ([cb] if (cb := trackers.params_callback(tracking)) else []),
                                              **online)
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    lora = a["lora"]
    log(f"{kind}: {a['model']} on {a['data']} ({len(dataset):,} examples), "
        f"{'LoRA r=' + str(lora['r']) if lora['enabled'] else 'full fine-tuning'}"
        f"{' (QLoRA 4-bit)' if lora['qlora'] else ''}, {'cuda' if cuda else 'cpu'}; "
        + (f"resuming from {resume[1].name}" if resume else "starting from scratch")
        + f" (attempt {int(order['restarts']) + 1})")
    t0 = time.time()
    trainer.train(resume_from_checkpoint=str(resume[1]) if resume else None)
    state = trainer.state
    if state.global_step < state.max_steps:
        log(f"stopped at step {state.global_step}/{state.max_steps} after {time.time() - t0:.1f} s: requeue")
        return STOP_EXIT
    trainer.accelerator.wait_for_everyone()
    if not rank0:
        return 0
    folder = _save(trainer, tokenizer, lora, out)
    result = _result(order, trainer, dataset, resume, ckpt_dir, folder, (started, t0), cuda)
    averaged = next((c.ema for c in trainer.callback_handler.callbacks if getattr(c, "ema", None) is not None), None)
    if averaged is not None:  # the final average beside the model
        ema.save(averaged, tokenizer, out / ema.EMA_DIR, float(a["ema"]["decay"]))
        result["ema"] = {"decay": float(a["ema"]["decay"]), "steps": int(averaged.n_averaged.item()),
                         "model_dir": str(Path(order.get("final_output_dir") or order["output_dir"]) / ema.EMA_DIR)}
    layout.atomic_write_json(out / "result.json", result)
    log(f"done: step {state.global_step}, loss {result['final_loss']}"
        + (f", reward margin {result['first_margin']:.4f} -> {result['final_margin']:.4f}"
           if result["first_margin"] is not None else "")
        + (f", reward {result['first_reward']:.4f} -> {result['final_reward']:.4f}"
           if result.get("first_reward") is not None else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
