"""Callables of the smoke pipeline (kind=python). Small, but they use the real contract: inputs
from parent stages, atomic outputs, and checkpoint/requeue."""
from __future__ import annotations

import json
import os
import signal
import time

from jobs.context import TaskContext
from jobs.layout import atomic_write_json, read_json


def reduce(ctx: TaskContext) -> dict:
    """Sum the value every shard of this sweep point wrote."""
    shards_dir = ctx.inputs["shards"]
    values = sorted((int(p.name), int((p / "value.txt").read_text())) for p in shards_dir.iterdir()
                    if p.name.isdigit())
    expected = ctx.params.get("expect_shards")
    if expected is not None and len(values) != expected:
        raise RuntimeError(f"expected {expected} shard outputs in {shards_dir}, found {len(values)}")
    total = sum(v for _, v in values)
    time.sleep(float(ctx.params.get("sleep_s", 0)))  # a task that lasts (tests of what a run cost)
    (ctx.output_dir / "total.txt").write_text(f"{total}\n")
    # what the task saw: its params (hub references resolved) and its hub settings
    return {"shards": len(values), "total": total, "params": ctx.params,
            "hub_env": {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "HF_HUB_CACHE")}}


def count(ctx: TaskContext) -> dict:
    """Count to params.target, one step every params.step_s seconds, saving the count (the
    checkpoint) every params.save_every steps (default 1). On the stop signal (or a SIGTERM): save
    and requeue; the next attempt continues from the saved count. progress.json beside the
    checkpoint holds the count reached so far (for observers; it is not resumed from).
    params.force_requeue_at: on the first attempt, send ourselves the stop signal at that count."""
    target, step_s = int(ctx.params["target"]), float(ctx.params.get("step_s", 0.1))
    save_every = int(ctx.params.get("save_every") or 1)
    force_at = ctx.params.get("force_requeue_at")
    state_file, progress_file = ctx.checkpoint_dir / "state.json", ctx.checkpoint_dir / "progress.json"
    state = read_json(state_file, {"count": 0, "attempts": []})
    state["attempts"].append({"restart": ctx.restart_count, "from": state["count"]})
    atomic_write_json(state_file, state)
    while state["count"] < target:
        if ctx.should_stop():
            state["attempts"][-1]["stopped_at"] = state["count"]
            atomic_write_json(state_file, state)
            ctx.requeue()
        time.sleep(step_s)
        state["count"] += 1
        atomic_write_json(progress_file, {"count": state["count"], "restart": ctx.restart_count})
        if state["count"] % save_every == 0:
            atomic_write_json(state_file, state)
        if force_at is not None and ctx.restart_count == 0 and state["count"] == int(force_at):
            os.kill(os.getpid(), getattr(signal, "SIG" + os.environ.get("LAUNCHER_STOP_SIGNAL", "USR2")))
    atomic_write_json(state_file, state)
    (ctx.output_dir / "count.txt").write_text(f"{state['count']}\n")
    (ctx.output_dir / "attempts.json").write_text(json.dumps(state["attempts"]) + "\n")
    return {"count": state["count"], "attempts": len(state["attempts"])}
