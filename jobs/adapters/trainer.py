"""kind=pretrain, backend=hf: a small Llama-style model trained with transformers' Trainer on
datatrove-tokenized folders, in one process on CPU or one GPU, or data parallel (DDP) in the processes
torchrun starts (train.parallelism.dp > 1; jobs/adapters/hf_ddp.py): gloo on CPU, NCCL on GPUs.

Requeue-safe and deterministic across an interruption:
- every checkpoint `<checkpoint_dir>/checkpoint-N` gets `launcher-complete.json` (written atomically,
  last, after the files were fsynced); only a checkpoint with that marker is ever resumed from, one
  without it (killed mid-save) is moved aside to `checkpoint-N.partial-<time>`;
- the training samples are a fixed function of (folders, weights, seed, step count) read in order
  (sequential sampler, no dropout), so the Trainer's batch skipping on resume lands on exactly the
  batches an uninterrupted run would see next, and optimizer/scheduler state come from the checkpoint;
- on the stop signal (ctx.should_stop()) the current step is finished, saved and marked, then
  ctx.requeue() raises Requeue. Under DDP every rank decides together (an all-reduce of the stop flag
  each step: ranks that saw the signal a step apart would otherwise save different steps and hang),
  rank 0 alone writes markers, logs, the model and the result.
- DDP sees the same samples per step as one process with dp times the micro batch: accelerate gives
  rank r the batches r, r+dp, ... of the sequential order, so the dp micro batches of a step are the
  consecutive samples the single process would take (tests/integration/test_hf_ddp.py: equal losses).
- train.ema.decay: the moving average of the weights (jobs/adapters/ema.py) joins each checkpoint as ema/
  before it is marked, comes back from the checkpoint resumed from, and ends in out/ema/ (docs/ema.md).

Heavy libraries (torch, transformers, datatrove) are imported inside the functions: this module is
imported on the compute node, in the stage's environment.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from jobs import layout
from jobs.adapters import ema
from jobs.adapters.trainer_progress import progress_callback
from jobs.runtime import retention
from jobs.runtime.checkpoints import MARKER, mark, resume_point, scan as scan_checkpoints

EOS = "<|endoftext|>"  # the data stage's end-of-document token (jobs.adapters.datatrove_blocks.EOS)
EVAL_SAMPLES = 8  # final_loss: the first samples of the first data folder


# -- plan -------------------------------------------------------------------------------------------
def plan_steps(train: dict) -> dict:
    """Steps, tokens per step and the checkpoint interval from the Train config; a step is dp (data
    parallel replicas, train.parallelism.dp) x micro_batch x grad_accum samples of seq_len tokens."""
    micro, accum, seq = int(train["micro_batch"]), int(train["grad_accum"]), int(train["seq_len"])
    dp = int((train.get("parallelism") or {}).get("dp", 1))
    for key, v in (("micro_batch", micro), ("grad_accum", accum), ("seq_len", seq)):
        if v < 1:
            raise ValueError(f"train.{key} must be >= 1 (it is {v})")
    tokens_per_step = dp * micro * accum * seq
    max_steps = int(train["tokens"]) // tokens_per_step
    if max_steps < 1:
        raise ValueError(f"train.tokens ({train['tokens']}) is less than one step: dp {dp} x micro_batch {micro} x "
                         f"grad_accum {accum} x seq_len {seq} = {tokens_per_step} tokens per step")
    every = int(train.get("checkpoint_every_tokens") or 0)
    interval = every // tokens_per_step if every > 0 else 0
    if every > 0 and interval < 1:
        raise ValueError(f"train.checkpoint_every_tokens ({every}) is less than one step ({tokens_per_step} tokens)")
    return {"tokens_per_step": tokens_per_step, "max_steps": max_steps, "interval": interval,
            "samples_per_step": dp * micro * accum, "save_steps": interval or max_steps, "dp": dp}


def scheduler(opt: dict, max_steps: int) -> tuple[str, dict]:
    """(lr_scheduler_type, lr_scheduler_kwargs) of transformers for train.optimizer.

    cosine: cosine_with_min_lr (decays to min_lr). linear: warmup_stable_decay with no stable phase and
    a linear decay to min_lr (transformers' `linear` can only reach 0). wsd: warmup_stable_decay, the
    last decay_fraction of the steps decaying to min_lr as 1 - sqrt(progress), like nanotron's wsd
    (`1-sqrt`), so both backends train with the same schedule."""
    lr, min_lr = float(opt["lr"]), float(opt.get("min_lr") or 0.0)
    warmup = int(opt.get("warmup_steps") or 0)
    if warmup >= max_steps and max_steps > 1:
        raise ValueError(f"train.optimizer.warmup_steps ({warmup}) must be smaller than the number of steps "
                         f"({max_steps})")
    ratio = min_lr / lr if lr > 0 else 0.0
    kind = str(opt.get("schedule", "cosine")).split(".")[-1]
    if kind == "cosine":
        return "cosine_with_min_lr", {"min_lr": min_lr}
    if kind == "linear":
        return "warmup_stable_decay", {"num_decay_steps": max(0, max_steps - warmup), "decay_type": "linear",
                                       "min_lr_ratio": ratio}
    if kind == "wsd":
        frac = float(opt.get("decay_fraction", 0.2))
        if not 0.0 <= frac <= 1.0:
            raise ValueError(f"train.optimizer.decay_fraction must be in [0, 1] (it is {frac})")
        decay = min(max(1, round(frac * max_steps)) if frac > 0 else 0, max(0, max_steps - warmup))
        return "warmup_stable_decay", {"num_decay_steps": decay, "decay_type": "1-sqrt", "min_lr_ratio": ratio}
    raise ValueError(f"train.optimizer.schedule: unknown schedule {kind!r} (cosine, linear, wsd)")


# -- tokenizer and model ----------------------------------------------------------------------------
def tokenizer_file(path: str) -> Path:
    p = Path(path)
    if p.is_dir():
        p = p / "tokenizer.json"
    if not p.is_file():
        raise FileNotFoundError(f"train.tokenizer: no tokenizer.json at {path}")
    return p


def load_tokenizer(path: str, model_max_length: int | None = None):
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_file(path)), eos_token=EOS)
    if tok.convert_tokens_to_ids(EOS) is None or EOS not in tok.get_vocab():
        raise ValueError(f"train.tokenizer: {path} has no {EOS} token (the data stage's end of document)")
    if model_max_length:
        tok.model_max_length = model_max_length
    return tok


def llama_config(m: dict, vocab_size: int, eos_id: int):
    from transformers import LlamaConfig

    if int(m.get("num_experts") or 0) > 0:
        raise NotImplementedError("MoE needs backend=nanotron")
    hidden, heads, kv = int(m["hidden_size"]), int(m["num_heads"]), int(m["num_kv_heads"])
    if hidden % heads:
        raise ValueError(f"train.model.hidden_size ({hidden}) must be divisible by train.model.num_heads ({heads})")
    if heads % kv:
        raise ValueError(f"train.model.num_heads ({heads}) must be divisible by train.model.num_kv_heads ({kv})")
    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=int(m["intermediate_size"]),
        num_hidden_layers=int(m["num_layers"]), num_attention_heads=heads, num_key_value_heads=kv,
        max_position_embeddings=int(m["max_position_embeddings"]),
        rope_parameters={"rope_type": "default", "rope_theta": float(m["rope_theta"])},
        rms_norm_eps=float(m["rms_norm_eps"]), tie_word_embeddings=bool(m["tie_embeddings"]),
        initializer_range=float(m["init_std"]),
        # <|endoftext|> ends a document; no BOS, and no pad id (a padding_idx would freeze that embedding)
        bos_token_id=None, eos_token_id=eos_id, pad_token_id=None)


# -- data -------------------------------------------------------------------------------------------
def open_folder(folder: str, seq_len: int, token_size: int):
    """datatrove's DatatroveFolderDataset over the *.ds files of a folder: items of seq_len+1 tokens."""
    from datatrove.utils.dataset import DatatroveFolderDataset

    if not Path(folder).is_dir():
        raise FileNotFoundError(f"train.data: folder {folder} does not exist")
    if not any(Path(folder).rglob("*.ds")):
        raise FileNotFoundError(f"train.data: no tokenized *.ds files in {folder} (datatrove DocumentTokenizer "
                                f"or DocumentTokenizerMerger output expected)")
    return DatatroveFolderDataset(folder, seq_len=seq_len, filename_pattern="*.ds", recursive=True,
                                  token_size=token_size, shuffle=False)


class MixedTokens:
    """A fixed sequence of `num_samples` training samples drawn from several folders by weight.

    Sample i comes from folder choice[i] (seeded draw), the k-th sample taken from a folder is its
    sample k (mod its length: a folder that runs out starts over). The order is a pure function of the
    folders, weights, seed and num_samples, so a resumed run sees exactly the samples it would have seen.
    Items: input_ids = tokens[:-1]; labels = shift_labels = tokens[1:] (already shifted: transformers'
    causal LM loss takes `shift_labels` as is), seq_len predictions per sample."""

    def __init__(self, sources: list, weights: list[float], num_samples: int, seed: int):
        import numpy as np

        total = float(sum(weights))
        p = np.asarray(weights, dtype=np.float64) / total
        rng = np.random.default_rng(seed)
        self.sources = sources
        self.choice = (rng.choice(len(sources), size=num_samples, p=p) if len(sources) > 1
                       else np.zeros(num_samples, dtype=np.int64)).astype(np.int32)
        self.offset = np.empty(num_samples, dtype=np.int64)
        self.counts, self.passes = [], []
        for k, src in enumerate(sources):
            idx = np.nonzero(self.choice == k)[0]
            self.offset[idx] = np.arange(len(idx), dtype=np.int64) % len(src)
            self.counts.append(int(len(idx)))
            self.passes.append(len(idx) / len(src))

    def __len__(self) -> int:
        return len(self.choice)

    def __getitem__(self, i: int) -> dict:
        tokens = self.sources[int(self.choice[i])][int(self.offset[i])]["input_ids"]
        x, y = tokens[:-1].clone(), tokens[1:].clone()
        return {"input_ids": x, "labels": y, "shift_labels": y}


def eval_batch(source, n: int = EVAL_SAMPLES) -> dict:
    import torch

    rows = [source[i]["input_ids"] for i in range(min(n, len(source)))]
    t = torch.stack(rows)
    y = t[:, 1:].contiguous()
    return {"input_ids": t[:, :-1].contiguous(), "labels": y, "shift_labels": y}


def mean_loss(model, batch: dict) -> float:
    """Mean causal-LM loss of the model's weights on a fixed batch (eval mode, no grad)."""
    import torch

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        out = model(**{k: v.to(device) for k, v in batch.items()})
    model.train(was_training)
    return float(out.loss.float().item())


# -- checkpoints (jobs/runtime/checkpoints.py) -----------------------------------------------------------
def last_logged_loss(log_history: list) -> float | None:
    for entry in reversed(log_history or []):
        if "loss" in entry:
            return float(entry["loss"])
    return None


def dist_rank_world() -> tuple[int, int]:
    """(rank, world size) of the torch.distributed process group; (0, 1) without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier() -> None:
    import torch.distributed as dist

    if dist_rank_world()[1] > 1:
        dist.barrier()


def _anyone_stops(ctx) -> bool:
    """ctx.should_stop() of any rank (an all-reduce MAX of the flags): all ranks stop at the same step."""
    import torch
    import torch.distributed as dist

    flag = ctx.should_stop()
    if dist_rank_world()[1] == 1:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int32)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def _callbacks(ctx, tokenizer, plan: dict, log: Callable[[str], Any]):
    """The Trainer callbacks: stop on the signal (together, under DDP), mark saved checkpoints (rank 0,
    after every rank wrote its files), log lines. `.stopped` tells whether a stop request ended it."""
    from transformers import TrainerCallback

    max_steps, tps, interval = plan["max_steps"], plan["tokens_per_step"], plan["interval"]

    class LauncherCallback(TrainerCallback):
        stopped = False

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= max_steps:
                control.should_log = True  # the last loss, for the final marker and the result
            elif _anyone_stops(ctx):
                log(f"stop requested at step {state.global_step}/{max_steps}: saving checkpoint-{state.global_step}")
                self.stopped = True
                control.should_log = True
                control.should_save = True
                control.should_training_stop = True
            return control

        def on_save(self, args, state, control, **kwargs):
            step = state.global_step
            path = Path(args.output_dir) / f"checkpoint-{step}"
            _barrier()  # every rank's files (rng_state_<rank>.pth) are written before the marker
            if dist_rank_world()[0] == 0:
                # Each checkpoint is a loadable HF model folder: evaluation scores them one by one.
                tokenizer.save_pretrained(str(path))
                reason = "final" if step >= max_steps else "interval" if interval and step % interval == 0 else "stop"
                loss = last_logged_loss(state.log_history)
                mark(path, {"step": step, "tokens": step * tps, "loss": loss, "reason": reason,
                            "max_steps": max_steps})
                log(f"checkpoint-{step} saved and marked complete ({reason}; {step * tps:,} tokens"
                    f"{'' if loss is None else f', loss {loss:.4f}'})")
                retention.prune_by(retention.from_env(), log)  # after the marker: the newest stays
            _barrier()  # marked before any rank goes on (a stopping rank checks the marker)
            return control

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = dict(logs or {})
            if "loss" in logs:
                parts = [f"step {state.global_step}/{max_steps}", f"tokens {state.global_step * tps:,}",
                         f"loss {logs['loss']:.4f}"]
                if logs.get("learning_rate") is not None:
                    parts.append(f"lr {logs['learning_rate']:.3g}")
                if logs.get("grad_norm") is not None:
                    parts.append(f"grad_norm {logs['grad_norm']:.3g}")
                log(" ".join(parts))
            return control

    return LauncherCallback()


# -- the stage --------------------------------------------------------------------------------------
def _join_process_group(dp: int, cuda: bool) -> int:
    """Under DDP (dp > 1), join torchrun's process group (gloo on CPU, NCCL on GPUs) before anything
    else, checking that torchrun started dp processes; returns this process's rank (0 without DDP).
    Raises RuntimeError when the world size torchrun set differs from train.parallelism.dp."""
    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if dp == 1 and world == 1:
        return 0
    if world != dp:
        raise RuntimeError(f"train.parallelism.dp is {dp} but torchrun started {world} process(es)")
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return dist.get_rank()


def _tokenizer(tokenizer: str, m: dict) -> tuple[Any, int, int]:
    """(tokenizer, vocabulary size, bytes per token id): the data stage's tokenizer.json, <|endoftext|>
    as EOS; the vocabulary is train.model.vocab_size (at least the tokenizer's)."""
    tok = load_tokenizer(tokenizer, model_max_length=int(m["max_position_embeddings"]))
    vocab = int(m.get("vocab_size") or len(tok))
    if vocab < len(tok):
        raise ValueError(f"train.model.vocab_size ({vocab}) is smaller than the tokenizer's {len(tok)} tokens")
    return tok, vocab, 4 if len(tok) > 65536 else 2  # datatrove's rule: uint16 ids up to 65,536 tokens


def _dataset(data: dict[str, float], plan: dict, seq_len: int, token_size: int, seed: int,
             log: Callable[[str], Any]) -> tuple[list, "MixedTokens"]:
    """(the folders' datasets, the fixed mixed sample order over them): folders -> weights."""
    if not data:
        raise ValueError("train.data: no tokenized folders")
    folders, weights = list(data), [float(w) for w in data.values()]
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"train.data: weights must be >= 0 with a positive sum (got {data})")
    sources = []
    for folder in folders:
        src = open_folder(folder, seq_len, token_size)
        if len(src) < plan["samples_per_step"]:
            raise ValueError(f"train.data: {folder} holds {len(src)} samples of seq_len+1 = {seq_len + 1} tokens; one "
                             f"step needs {plan['samples_per_step']} (micro_batch x grad_accum)")
        sources.append(src)
    dataset = MixedTokens(sources, weights, plan["max_steps"] * plan["samples_per_step"], seed)
    for folder, w, src, n, passes in zip(folders, weights, sources, dataset.counts, dataset.passes):
        log(f"data {folder}: weight {w:g}, {len(src):,} samples of {seq_len + 1} tokens, {n:,} drawn"
            f"{f' ({passes:.2f} passes: repeats)' if passes > 1 else ''}")
    return sources, dataset


def mix_summary(data: dict[str, float], sources: list, dataset: "MixedTokens", seq_len: int) -> list[dict]:
    """result.json's `data`: per folder its weight, its share of the weights, the samples it holds and
    the samples (and predicted tokens, seq_len each) the fixed order draws from it; `passes` > 1: repeats."""
    total = float(sum(data.values()))
    return [{"folder": folder, "weight": float(w), "share": round(float(w) / total, 6), "samples": len(src),
             "drawn": n, "drawn_tokens": n * seq_len, "passes": round(passes, 4)}
            for (folder, w), src, n, passes in zip(data.items(), sources, dataset.counts, dataset.passes)]


def _fixed_batch(sources: list, folder: str, vocab: int, tokenizer: str) -> dict:
    """The first samples of the first folder (final_loss), checked against the vocabulary."""
    fixed = eval_batch(sources[0])
    top = int(max(int(fixed['input_ids'].max()), int(fixed['labels'].max())))
    if top >= vocab:
        raise ValueError(f"token id {top} in {folder} is outside the vocabulary ({vocab}): was the data "
                         f"tokenized with {tokenizer}? (train.model.vocab_size)")
    return fixed


def _resume(ckpt_dir: Path, ctx, tps: int, log: Callable[[str], Any]):
    """The newest complete checkpoint as (step, path), or None; incomplete ones are set aside."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    resume = resume_point(ckpt_dir, log)
    if resume:
        info = layout.read_json(resume[1] / MARKER, {})
        log(f"resuming from checkpoint-{resume[0]} (step {resume[0]}, {info.get('tokens', resume[0] * tps):,} tokens)"
            f", attempt {ctx.restart_count + 1}")
    else:
        log(f"starting from scratch (attempt {ctx.restart_count + 1})")
    return resume


def _training_args(train: dict, plan: dict, ckpt_dir: Path, seed: int, cuda: bool, tracking: dict | None = None):
    """transformers' TrainingArguments of the stage's train section; under DDP (plan["dp"] > 1) the
    process group torchrun's environment describes (gloo on CPU, NCCL on GPUs). `tracking`: report_to and
    run_name for transformers' tracker callbacks (jobs/adapters/tracking.py trainer_settings)."""
    tracking = tracking or {}
    from transformers import TrainingArguments

    opt, max_steps = train["optimizer"], plan["max_steps"]
    sched, sched_kwargs = scheduler(opt, max_steps)
    dtype = str(train.get("dtype", "float32")).lower()
    return TrainingArguments(
        output_dir=str(ckpt_dir), max_steps=max_steps,
        per_device_train_batch_size=int(train["micro_batch"]), gradient_accumulation_steps=int(train["grad_accum"]),
        learning_rate=float(opt["lr"]), lr_scheduler_type=sched, lr_scheduler_kwargs=sched_kwargs,
        warmup_steps=int(opt.get("warmup_steps") or 0), weight_decay=float(opt["weight_decay"]),
        adam_beta1=float(opt["beta1"]), adam_beta2=float(opt["beta2"]), adam_epsilon=float(opt["eps"]),
        max_grad_norm=float(opt["clip_grad"]), optim="adamw_torch_fused" if cuda else "adamw_torch",
        save_strategy="steps", save_steps=plan["save_steps"], save_total_limit=None, save_only_model=False,
        logging_strategy="steps", logging_steps=max(1, int(train.get("log_every_steps") or 1)),
        seed=seed, data_seed=seed, train_sampling_strategy="sequential", remove_unused_columns=False,
        report_to=tracking.get("report_to", "none"), run_name=tracking.get("run_name"),
        dataloader_num_workers=0, dataloader_pin_memory=cuda, disable_tqdm=True,
        use_cpu=not cuda, bf16=cuda and dtype in ("bfloat16", "bf16"), fp16=cuda and dtype in ("float16", "fp16"),
        restore_callback_states_from_checkpoint=False, ignore_data_skip=False,
        ddp_backend=("nccl" if cuda else "gloo") if plan["dp"] > 1 else None, ddp_find_unused_parameters=False)


def _tracking_callbacks(tracking: dict | None) -> list:
    """The launcher's additions to transformers' tracker callback (the sweep point into W&B's config)."""
    from jobs.adapters.tracking import params_callback

    cb = params_callback(tracking)
    return [cb] if cb is not None else []


def _ema_callback(train: dict, tok, resume, log: Callable[[str], Any]) -> list:
    """train.ema.decay: the moving average's callback (jobs/adapters/ema.py), restored from the checkpoint
    the run resumes from; [] when off. It goes before the callback that marks checkpoints complete."""
    decay = (train.get("ema") or {}).get("decay")
    return [ema.ema_callback(float(decay), tok, resume[1] if resume else None, log)] if decay else []


def _save_ema(train: dict, averaging: list, tok, out: Path, ckpt_dir: Path, final_step: int) -> dict | None:
    """The final average into out/ema/ (rank 0): the callback's, or, when the run had nothing left to train,
    the final checkpoint's; its {decay, steps, model_dir} for the result, None when EMA is off."""
    if not averaging:
        return None
    import shutil

    folder, averaged = out / ema.EMA_DIR, averaging[0].ema
    if averaged is not None:
        ema.save(averaged, tok, folder, float(train["ema"]["decay"]))
    else:
        shutil.copytree(ckpt_dir / f"checkpoint-{final_step}" / ema.EMA_DIR, folder, dirs_exist_ok=True)
    state = json.loads((folder / ema.EMA_STATE).read_text())
    return {"decay": state["decay"], "steps": state["steps"], "model_dir": str(folder)}


def _fit(ctx, model, args, dataset, tok, plan: dict, resume, callbacks: Iterable, log: Callable[[str], Any],
         tracking: dict | None = None):
    """Train from `resume` (or scratch) to plan["max_steps"]: (model, log history, final step). Requeues
    (ctx.requeue()) when a stop request ended training early with its checkpoint saved and marked."""
    from transformers import LlamaForCausalLM, PrinterCallback, ProgressCallback, Trainer, default_data_collator

    max_steps, ckpt_dir = plan["max_steps"], Path(args.output_dir)
    t0 = time.time()
    if resume and resume[0] >= max_steps:
        # Killed after the final checkpoint: nothing left to train, its weights are the result.
        log(f"checkpoint-{resume[0]} is the final step: nothing to train")
        state = json.loads((resume[1] / "trainer_state.json").read_text())
        return (LlamaForCausalLM.from_pretrained(str(resume[1])), state.get("log_history", []),
                int(state.get("global_step", resume[0])))
    if ctx.should_stop():
        log("stop requested before training started: requeueing")
        ctx.requeue()
    if resume and model.config.tie_word_embeddings:
        log("(a warning that lm_head.weight is missing from the checkpoint is expected: it is tied to the "
            "input embeddings)")
    launcher_cb = _callbacks(ctx, tok, plan, log)
    # The progress callback comes after the one that marks checkpoints: the checkpoint it names is complete.
    progress = progress_callback(layout.progress_path(ctx.run_dir, ctx.stage, ctx.task), plan["tokens_per_step"])
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=default_data_collator,
                      callbacks=[*callbacks, launcher_cb, progress, *_tracking_callbacks(tracking)])
    trainer.remove_callback(PrinterCallback)  # our own log lines instead of dicts
    trainer.remove_callback(ProgressCallback)
    trainer.train(resume_from_checkpoint=str(resume[1]) if resume else None)
    final_step = trainer.state.global_step
    if final_step < max_steps:
        saved = ckpt_dir / f"checkpoint-{final_step}" / MARKER
        if not launcher_cb.stopped:
            raise RuntimeError(f"training stopped at step {final_step} of {max_steps} without a stop request")
        if not saved.is_file():
            raise RuntimeError(f"training stopped at step {final_step} but checkpoint-{final_step} is not marked")
        log(f"stopped at step {final_step}/{max_steps} after {time.time() - t0:.1f} s; checkpoint-{final_step} "
            f"is complete: requeueing")
        ctx.requeue()
    return trainer.model, trainer.state.log_history, final_step


def _save_outputs(ctx, model, tok, log_history: list) -> Path:
    """The Hugging Face model folder (+ tokenizer) and the log history, into the task's output."""
    out = Path(ctx.output_dir)
    model_dir = out / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(model_dir))
    tok.save_pretrained(str(model_dir))
    (out / "metrics.jsonl").write_text("".join(json.dumps(e, default=str) + "\n" for e in log_history))
    return model_dir


def train(ctx, train: dict, data: dict[str, float], tokenizer: str, *, log: Callable[[str], Any] = print,
          callbacks: Iterable = (), tracking: dict | None = None) -> dict:
    """Train (or continue training) the model; returns the result (see module docstring).

    `callbacks`: extra TrainerCallbacks, run before the launcher's own (monitoring, tests). `tracking`:
    jobs/adapters/tracking.py trainer_settings (its variables are exported here, in every rank's process,
    before the Trainer builds transformers' tracker callback); None: no tracker."""
    import torch
    import transformers
    from transformers import LlamaForCausalLM

    started = time.time()
    transformers.utils.logging.disable_progress_bar()  # log lines, not progress bars, in the task log
    if os.environ.get("SLURM_CPUS_PER_TASK"):  # shared by the processes torchrun started on this node
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        torch.set_num_threads(max(1, int(os.environ["SLURM_CPUS_PER_TASK"]) // per_node))
    cuda = torch.cuda.is_available()
    m = train["model"]
    plan = plan_steps(train)
    rank = _join_process_group(plan["dp"], cuda)
    max_steps, tps, seq_len = plan["max_steps"], plan["tokens_per_step"], int(train["seq_len"])
    seed = int(train.get("seed", 1))
    if seq_len > int(m["max_position_embeddings"]):
        raise ValueError(f"train.seq_len ({seq_len}) exceeds train.model.max_position_embeddings "
                         f"({m['max_position_embeddings']})")
    tok, vocab, token_size = _tokenizer(tokenizer, m)
    sources, dataset = _dataset(data, plan, seq_len, token_size, seed, log)
    fixed = _fixed_batch(sources, next(iter(data)), vocab, tokenizer)

    # model: seeded init (a resumed run loads the checkpoint's weights over it)
    transformers.set_seed(seed)
    model = LlamaForCausalLM(llama_config(m, vocab, tok.eos_token_id))
    params = sum(p.numel() for p in model.parameters())
    ckpt_dir = Path(ctx.checkpoint_dir)
    # Rank 0 sets incomplete checkpoints aside first; then every rank finds the same newest one.
    resume = _resume(ckpt_dir, ctx, tps, log) if rank == 0 else None
    _barrier()
    if rank != 0:
        resume = _resume(ckpt_dir, ctx, tps, lambda _msg: None)
    log(f"model: {params:,} parameters (hidden {m['hidden_size']}, {m['num_layers']} layers, vocab {vocab}); "
        f"{max_steps} steps of {tps:,} tokens (micro_batch {train['micro_batch']} x grad_accum "
        f"{train['grad_accum']} x seq_len {seq_len}), checkpoint every "
        f"{plan['interval'] or max_steps} steps; {'cuda' if cuda else f'cpu, {torch.get_num_threads()} threads'}")
    os.environ.update((tracking or {}).get("env") or {})
    args = _training_args(train, plan, ckpt_dir, seed, cuda, tracking)
    t0 = time.time()
    averaging = _ema_callback(train, tok, resume, log)
    model, log_history, final_step = _fit(ctx, model, args, dataset, tok, plan, resume, [*callbacks, *averaging],
                                          log, tracking)
    train_seconds = time.time() - t0
    if not (ckpt_dir / f"checkpoint-{max_steps}" / MARKER).is_file():
        raise RuntimeError(f"training reached step {final_step} but checkpoint-{max_steps} was not saved and marked")
    if rank != 0:  # rank 0 writes the model and the result
        return {"rank": rank, "final_step": final_step}
    model_dir = _save_outputs(ctx, model, tok, log_history)
    final_loss = mean_loss(model, fixed)
    complete, _ = scan_checkpoints(ckpt_dir)
    reasons = {s: (layout.read_json(p / MARKER, {}) or {}).get("reason") for s, p in complete}
    trained = (final_step - (resume[0] if resume else 0)) * tps
    result = {
        "final_step": final_step, "max_steps": max_steps, "tokens": final_step * tps, "tokens_per_step": tps,
        "final_train_loss": last_logged_loss(log_history), "final_loss": final_loss,
        "tokens_per_s": round(trained / train_seconds, 1) if train_seconds > 0 and trained else 0.0,
        "train_seconds": round(train_seconds, 3), "seconds": round(time.time() - started, 3),
        "resumed_from": resume[0] if resume else None, "params": params,
        "checkpoints": [s for s, _ in complete if reasons[s] != "stop"],
        "stop_checkpoints": [s for s, _ in complete if reasons[s] == "stop"],
        "checkpoint_dir": str(ckpt_dir), "model_dir": str(model_dir), "device": "cuda" if cuda else "cpu",
        "dp": plan["dp"], "ema": _save_ema(train, averaging, tok, Path(ctx.output_dir), ckpt_dir, final_step),
        "data": mix_summary(data, sources, dataset, seq_len),
    }
    log(f"done: step {final_step}, {result['tokens']:,} tokens, train loss {result['final_train_loss']}, "
        f"fixed-set loss {final_loss:.5f}, {result['tokens_per_s']:,} tokens/s over {train_seconds:.1f} s")
    return result
