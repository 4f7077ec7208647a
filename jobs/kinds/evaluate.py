"""kind=evaluate: score every complete checkpoint of one training run (this task's sweep point) with
lighteval, each exactly once.

The task follows training: it starts when training starts (`after`), evaluates each checkpoint
as its completion marker appears, and ends once training has ended, in whatever state (a failed
run still gets its last checkpoints scored). Each result is one file, written atomically,
stages/<stage>/evals/<point>/step-<N>.json: a checkpoint with a result is never scored again, so
a requeued trainer, a restarted evaluation or a rerun never adds a second result, and a missed
checkpoint is back-filled. A checkpoint without its marker (partial) or saved on a stop signal
(off the token interval) is never scored. A checkpoint that holds the moving average of its weights
(`ema/`, train.ema / align.ema: jobs/adapters/ema.py) has those scored too, first, into step-<N>-ema.json:
step-<N>.json, written last, still says the checkpoint is done (retention reads it). At the end the run's rows go to out/<point>/0/results.csv
(the table `launcher report` reads; jobs/adapters/eval_results.py). Standard library at import; lighteval is
imported when used.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

from jobs import layout
from jobs.adapters import ema
from jobs.adapters.eval_results import result_name, results_dir, variant, write_table
from jobs.runtime import polling, retention
from jobs.runtime.checkpoints import MARKER

reruns_when_complete = False
resolves_hub_references = True


def checkpoints(spec: Dict[str, Any], point: int) -> List[Tuple[int, Path]]:
    """(step, folder) of the parent's complete checkpoints on the token interval, oldest first."""
    parent = spec["parents"][0]
    run_dir, _, at = layout.located(spec, parent, point)  # a shared or cached training's
    folder = layout.checkpoint_dir(run_dir, parent, at)
    if spec["parent_kind"] in ("pretrain", "align"):  # Trainer's checkpoint-N, with a marker, files intact
        from jobs.runtime.checkpoints import scan as scan_checkpoints

        complete, _ = scan_checkpoints(folder)
        return [(s, p) for s, p in complete if (layout.read_json(p / MARKER, {}) or {}).get("reason") != "stop"]
    # convert: <step>/ Hugging Face folders, each with its marker
    return sorted((int(d.name), d) for d in (folder.iterdir() if folder.is_dir() else ())
                  if d.name.isdigit() and (d / MARKER).is_file())


SQUEUE_EVERY_S = 120  # markers are read every poll; the controller is asked at most this often per task


def training_ended(spec: Dict[str, Any], point: int, ask_slurm: bool = True) -> bool:
    """The parent's task for this point has ended (layout.task_ended)."""
    parent = spec["parents"][0]
    run_dir, stage_hash, at = layout.located(spec, parent, point)  # a shared or cached training's
    return layout.task_ended(run_dir, parent, stage_hash or spec["parent_hash"], at, spec["backend"], ask_slurm)


def run(task) -> Dict[str, Any]:
    from jobs.adapters import eval_tasks

    task.export_environment()
    spec, ev, point = task.spec, task.payload["evaluate"], task.point
    stage_dir = layout.stage_dir(task.run_dir, task.stage)
    tasks = list(ev["tasks"])
    if ev["suite"] == "demo":
        tasks = list(eval_tasks.write_tasks(stage_dir / "tasks" / "demo").values()) + tasks
    out_dir = results_dir(task.run_dir, task.stage, point)
    out_dir.mkdir(parents=True, exist_ok=True)
    task.log(f"evaluate: point {point} ({variant(spec['overrides'], point)}, seed {spec['seeds'][point]}), tasks "
             f"{', '.join(t['name'] for t in tasks)}; following {spec['parents'][0]}")
    keep = retention.order(spec, spec["parents"][0], point, task.run_dir)  # the training's, if it prunes
    asked = 0.0
    while True:
        ask = time.time() - asked >= SQUEUE_EVERY_S
        asked = time.time() if ask else asked
        ended = training_ended(spec, point, ask)  # before listing: a checkpoint written just before the end counts
        todo = [(s, p) for s, p in checkpoints(spec, point) if not (out_dir / f"step-{s}.json").exists()]
        for step, folder in todo:
            for weights, model in models(folder, out_dir, step):
                if task.ctx.should_stop():
                    task.ctx.requeue()
                score(task, tasks, step, model, out_dir, weights)
            retention.prune_by(keep, task.log)  # scored: the training's rule may let it go now
        if ended and not todo:
            break
        if not todo and polling.until(task.ctx.should_stop, ev["poll_s"], 0.5):
            task.ctx.requeue()
    retention.prune_by(keep, task.log)
    steps = write_table(out_dir, task.ctx.output_dir / "results.csv")
    task.log(f"evaluate: {len(steps)} checkpoint(s) scored: steps {steps}")
    return {"point": point, "steps": steps, "results": str(out_dir)}


def models(folder: Path, out_dir: Path, step: int) -> List[Tuple[str, Path]]:
    """(weights, model folder) of a checkpoint still to score: its moving average ("ema", when it has one
    and it has no result yet), then its raw weights ("raw", whose result says the checkpoint is done)."""
    averaged = folder / ema.EMA_DIR
    first = [("ema", averaged)] if (averaged / ema.EMA_STATE).is_file() and not \
        (out_dir / result_name(step, "ema")).exists() else []
    return first + [("raw", folder)]


def score(task, tasks: List[Dict[str, Any]], step: int, folder: Path, out_dir: Path, weights: str = "raw") -> None:
    """Score one checkpoint's weights (raw, or its moving average: ema) with lighteval; its result file,
    written atomically, says it is done."""
    from jobs.adapters.lighteval import evaluate

    spec, ev, point = task.spec, task.payload["evaluate"], task.point
    t0 = time.time()
    work = layout.stage_dir(task.run_dir, task.stage) / "work" / str(point) / f"{step}{'-ema' if weights == 'ema' else ''}"
    metrics = evaluate(str(folder), tasks, str(work), batch_size=ev["batch_size"], max_samples=ev["max_samples"],
                       log=task.log)
    tokens_per_step = spec["schedules"][point]["tokens_per_step"]
    marker = (folder.parent if weights == "ema" else folder) / MARKER
    tokens = (layout.read_json(marker, {}) or {}).get("tokens") or step * tokens_per_step
    layout.atomic_write_json(out_dir / result_name(step, weights), {
        "campaign": spec["campaign"], "run_id": spec["run_id"], "point": point,
        "variant": variant(spec["overrides"], point), "seed": spec["seeds"][point], "step": step,
        "tokens": tokens, "checkpoint": str(folder), "metrics": metrics, "tasks": tasks,
        "seconds": round(time.time() - t0, 2), "job_id": task.job_id, "weights": weights})
    from jobs.adapters import tracking  # the scores as metrics at the step (tracking.backend=tensorboard)

    tracking.write_eval_scalars(spec, point, step, metrics, prefix="eval_ema" if weights == "ema" else "eval")
    task.log(f"evaluate: step {step}{' (EMA)' if weights == 'ema' else ''} ({tokens:,} tokens) scored in {time.time() - t0:.1f} s: "
             + ", ".join(f"{t}/{m}={v:.4f}" for t, ms in metrics.items() for m, v in ms.items()
                         if not m.endswith("_stderr") and isinstance(v, (int, float))))
