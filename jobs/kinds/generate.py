"""kind=generate on the compute node: offline batch inference with vllm.LLM in this task's process
(jobs/adapters/vllm.py), over this task's shard of the prompt records (jobs/runtime/prompt_records.py).

1. the shard: the records at positions i % tasks == index of generate.input (or of the seed lists);
2. the prompt template (Jinja2, StrictUndefined) is rendered for every record, then the model's chat
   template when generate.chat; a template that does not render for the first record fails the task
   with the same message preflight gives when it can read the input;
3. resumable: results go to <checkpoint_dir>/generations.jsonl, one JSON line per request with its id,
   appended and flushed after every batch (jobs/runtime/jsonl.py, which tolerates a torn last line). A
   requeued task reads the ids already written and generates only the others. The stop signal is
   looked at between batches: what was generated is on disk, then the task requeues;
4. on success the records, in shard order, become <output>/generations.jsonl, and result.json gets the
   counts and the throughput (prompts/s, generated tokens/s, over the generation time of every attempt).

The stop signal is blocked while vLLM starts its engine processes: they inherit the blocked signal
(and so never die of it; Slurm's --signal and the local scheduler send it to every process of the
step) while this process gets it, pending, once unblocked."""
from __future__ import annotations

import os
import signal
import time
from typing import Any, Dict, List, Tuple

from jobs import layout
from jobs.context import Requeue
from jobs.runtime import jsonl, prompt_records
from jobs.runtime.templating import TEMPLATES_DIR

reruns_when_complete = False
resolves_hub_references = True

RESULTS = "generations.jsonl"
ATTEMPTS = "attempts.json"


class GenerateConfigError(ValueError):
    """Bad stage config found on the node (the input was not readable at submission): names stage and key."""


def bad(task, key: str, message: str) -> GenerateConfigError:
    return GenerateConfigError(f"stage '{task.stage}': pipeline.stages.{task.stage}.generate.{key}: {message}")


def shard_requests(task, g: Dict[str, Any]) -> List[Tuple[str, Dict[str, Any]]]:
    """This task's (id, record) pairs, in input order. Raises (naming stage and key) on duplicate ids."""
    out, seen = [], set()
    for rid, rec in prompt_records.shard(g, task.index, task.spec["tasks_per_point"]):
        if rid in seen:
            raise bad(task, "id_key", f"request id {rid!r} appears twice in this task's shard of {g['input']}: ids "
                                      f"must be unique (a requeued task skips the ids it has written)")
        seen.add(rid)
        out.append((rid, rec))
    return out


def checked_template(task, g: Dict[str, Any], first):
    """The compiled prompt template, checked against the shard's first record."""
    text = prompt_records.template_text(g, TEMPLATES_DIR)
    key = "prompt_file" if g.get("prompt_file") else "prompt"
    if first is not None and (problem := prompt_records.template_problem(text, first)):
        raise bad(task, key, problem)
    return prompt_records.compile_template(text)


def guided_kwargs(task, g: Dict[str, Any]) -> Dict[str, Any]:
    from jobs.adapters import vllm

    try:
        schema = prompt_records.guided_schema(g["guided"])
    except ValueError as e:
        raise bad(task, "guided.json", str(e)) from None
    if schema is not None and (problem := prompt_records.schema_problem(schema)):
        raise bad(task, "guided.json", problem)
    return vllm.structured_outputs(g["guided"], schema)


def visible_gpus() -> int:
    """GPUs this task may use: CUDA_VISIBLE_DEVICES when set (Slurm sets it for --gpus-per-node), else torch's count."""
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
    if cvd is not None:
        return len([d for d in cvd.split(",") if d.strip()])
    import torch

    return torch.cuda.device_count()


def load_llm(task, g: Dict[str, Any], model: str):
    """vllm.LLM on the model, the stop signal blocked while it starts its processes (see the module doc)."""
    from jobs.adapters import vllm

    gpus = int(task.spec.get("gpus") or 0)
    tp = int(g["tensor_parallel_size"])
    if gpus and tp > (have := visible_gpus()):
        raise bad(task, "tensor_parallel_size", f"{tp} but this node shows the task {have} GPU(s) "
                                                f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')})")
    vllm.offline_env(os.environ)
    stop = getattr(signal, "SIG" + os.environ.get("LAUNCHER_STOP_SIGNAL", "USR2"), signal.SIGUSR2)
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {stop})
    try:
        from vllm import LLM

        return LLM(**vllm.llm_kwargs(g, model, gpus))
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def make_prompts(task, g, llm, template, batch):
    """[(prompt text, vLLM prompt)] of a batch: the template rendered, then the chat template (token ids,
    so no second BOS is added) when generate.chat."""
    out = []
    tok = llm.get_tokenizer() if g["chat"] else None
    if tok is not None and not getattr(tok, "chat_template", None):
        raise bad(task, "chat", f"{g['model']} has no chat template (tokenizer_config.json chat_template or "
                                f"chat_template.jinja): use chat: false")
    for _, rec in batch:
        text = template.render(**rec)
        if tok is None:
            out.append((text, text))
            continue
        messages = ([{"role": "system", "content": g["system"]}] if g.get("system") else []) + \
            [{"role": "user", "content": text}]
        chat = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        out.append((chat, {"prompt_token_ids": tok.encode(chat, add_special_tokens=False)}))
    return out


def output_record(task, g, rid, rec, prompt, seed, out) -> Dict[str, Any]:
    """One line of generations.jsonl: the request, what came back, and how it was sampled."""
    texts = [c.text for c in out.outputs]
    r = {"id": rid, "prompt": prompt, "completion": texts[0] if texts else "",
         "finish_reason": out.outputs[0].finish_reason if out.outputs else None,
         "prompt_tokens": len(out.prompt_token_ids or []),
         "completion_tokens": sum(len(c.token_ids) for c in out.outputs),
         "model": g["model"], "sampling": {**{k: v for k, v in g["sampling"].items() if k != "extra"},
                                           **(g["sampling"].get("extra") or {}), "seed": seed},
         "attempt": task.restarts}
    if len(texts) > 1:
        r["completions"] = texts
    if g["guided"].get("json") is not None or g["guided"].get("choice"):
        r["guided"] = "json" if g["guided"].get("json") is not None else "choice"
    keep = list(rec) if g.get("seeds") else list(g.get("keep") or [])
    if keep:
        r["input"] = {k: rec.get(k) for k in keep}
    return r


def generate_batches(task, g, llm, template, todo, partial, stats: Dict[str, Any]) -> None:
    """Generate `todo` in batches of generate.batch_size, appending each batch's records to `partial`
    and counting them in `stats` (this attempt's record). Raises Requeue (after the last whole batch is
    on disk) when the stop signal came."""
    from jobs.adapters import vllm

    gk = guided_kwargs(task, g)
    stats.update(generated=0, prompt_tokens=0, completion_tokens=0, generate_s=0.0)
    size = max(1, int(g["batch_size"]))
    for i in range(0, len(todo), size):
        if task.ctx.should_stop():
            raise Requeue()
        batch = todo[i:i + size]
        t0 = time.time()
        prompts = make_prompts(task, g, llm, template, batch)
        seeds = [prompt_records.request_seed(g["sampling"].get("seed"), rid) for rid, _ in batch]
        params = [vllm.sampling_params(g["sampling"], s, gk) for s in seeds]
        outs = llm.generate([p for _, p in prompts], params, use_tqdm=False)
        records = [output_record(task, g, rid, rec, text, s, o)
                   for (rid, rec), (text, _), s, o in zip(batch, prompts, seeds, outs)]
        stats["generate_s"] += time.time() - t0
        jsonl.extend(partial, records)
        stats["generated"] += len(records)
        stats["prompt_tokens"] += sum(r["prompt_tokens"] for r in records)
        stats["completion_tokens"] += sum(r["completion_tokens"] for r in records)
        task.log(f"generate: {stats['generated']}/{len(todo)} requests of this attempt written")


def throughput(attempts: List[Dict[str, Any]]) -> Dict[str, Any]:
    """prompts/s and generated tokens/s over the generation time of every attempt (model loading apart)."""
    gen_s = sum(a.get("generate_s", 0.0) for a in attempts)
    n = sum(a.get("generated", 0) for a in attempts)
    toks = sum(a.get("completion_tokens", 0) for a in attempts)
    return {"prompts_per_s": round(n / gen_s, 3) if gen_s else None,
            "generated_tokens_per_s": round(toks / gen_s, 2) if gen_s else None,
            "generate_s": round(gen_s, 3), "load_s": round(sum(a.get("load_s", 0.0) for a in attempts), 2)}


def finish(task, requests, partial, attempts) -> Dict[str, Any]:
    """The shard's records in input order into the output; the result."""
    by_id = {r["id"]: r for r in jsonl.read(partial)}
    missing = [rid for rid, _ in requests if rid not in by_id]
    if missing:
        raise RuntimeError(f"generate: {len(missing)} request(s) have no result, e.g. {missing[:3]}")
    records = [by_id[rid] for rid, _ in requests]
    out = task.ctx.output_dir / RESULTS
    out.unlink(missing_ok=True)
    jsonl.extend(out, records)
    return {"requests": len(records), "output": str(task.final_out / RESULTS),
            "prompt_tokens": sum(r["prompt_tokens"] for r in records),
            "completion_tokens": sum(r["completion_tokens"] for r in records),
            "resumed_with": attempts[-1]["skipped"], "attempts": attempts, "throughput": throughput(attempts)}


def drop_stale_results(task, g: Dict[str, Any], partial) -> None:
    """Results written under another config of this stage (a `resume --force` after an edit) are not
    this config's: they are moved aside (generations.jsonl.stale-<n>), never mixed in."""
    import hashlib
    import json

    digest = hashlib.sha256(json.dumps(g, sort_keys=True, default=str).encode()).hexdigest()
    mark = task.ctx.checkpoint_dir / "config.sha256"
    old = mark.read_text().strip() if mark.exists() else digest
    if old != digest and partial.exists():
        n = len(list(partial.parent.glob(RESULTS + ".stale-*")))
        aside = partial.with_name(f"{RESULTS}.stale-{n}")
        partial.rename(aside)
        (task.ctx.checkpoint_dir / ATTEMPTS).unlink(missing_ok=True)
        task.log(f"generate: the stage's config changed since these results were written: moved to {aside.name}")
    layout.atomic_write_text(mark, digest + "\n")


def run(task) -> Dict[str, Any]:
    g = dict(task.payload["generate"])
    folders = layout.Folders(task.spec, task.point)  # only these two may name run folders ({input}...)
    g.update(model=folders.fill(g["model"]), input=folders.fill(g["input"]))
    task.export_environment()
    requests = shard_requests(task, g)
    template = checked_template(task, g, requests[0][1] if requests else None)
    partial = task.ctx.checkpoint_dir / RESULTS
    drop_stale_results(task, g, partial)
    done = {r.get("id") for r in jsonl.read(partial)}
    todo = [(rid, rec) for rid, rec in requests if rid not in done]
    attempts = layout.read_json(task.ctx.checkpoint_dir / ATTEMPTS, [])
    attempt = {"restart": task.restarts, "skipped": len(requests) - len(todo), "generated": 0}
    attempts.append(attempt)
    task.log(f"generate: shard {task.index} of {task.spec['tasks_per_point']}: {len(requests)} requests, "
             f"{attempt['skipped']} already written, {len(todo)} to generate")
    try:
        if todo:
            t0 = time.time()
            llm = load_llm(task, g, g["model"])
            attempt["load_s"] = round(time.time() - t0, 2)
            generate_batches(task, g, llm, template, todo, partial, attempt)
    except BaseException:
        if task.ctx.should_stop() or task.terminated:  # the stop signal, or a SIGTERM (scontrol requeue)
            attempt["stopped"] = True
        raise
    finally:
        layout.atomic_write_json(task.ctx.checkpoint_dir / ATTEMPTS, attempts)
    return finish(task, requests, partial, attempts)
