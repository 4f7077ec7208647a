"""kind=pretrain: resolve the run folders the stage names, then train with the stage's backend.

- hf: transformers' Trainer in this process (jobs/adapters/trainer.py), checkpoints ckpt/<task>/checkpoint-N;
  with train.parallelism.dp > 1 under torchrun on every node, DDP (jobs/adapters/hf_ddp.py).
- nanotron: one torchrun per node running nanotron's run_train.py (jobs/adapters/nanotron.py).
The result names the campaign and this sweep point's overrides and seed: what evaluation and reports
group by. Standard library only at import: the heavy libraries are imported by the backend that needs them.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Optional

from jobs.adapters import nanotron
from jobs.runtime import retention

reruns_when_complete = False
resolves_hub_references = True


def run(task) -> Optional[Dict[str, Any]]:
    """kind=pretrain for one task (= one sweep point)."""
    train = task.payload["train"]
    data, tokenizer = nanotron.inputs(task.spec, task.point, train)
    missing = [f for f in data if not Path(f).is_dir()]
    if missing:
        raise FileNotFoundError(f"train.data: tokenized folder(s) not found: {', '.join(missing)}")
    keep = retention.order(task.spec, task.stage, task.point, task.run_dir)
    if keep:  # the trainer prunes after each marked checkpoint (every process reads it from here)
        os.environ[retention.ENV] = json.dumps(keep)
    tracking = None
    if train["backend"] == "hf":  # transformers' tracker callbacks (nanotron: none; launcher/plan/tracking.py)
        from jobs.adapters import tracking as trackers

        tracking = (trackers.prepare(task.spec, task.point, log=task.log) if task.rank == 0
                    else trackers.trainer_settings(task.spec, task.point))
    if train["backend"] == "hf" and train["parallelism"]["dp"] > 1:
        from jobs.adapters import hf_ddp

        result = hf_ddp.launch(task, train, data, tokenizer, tracking)
        if result is None:  # not the first node: rank 0 there writes the model and the result
            return None
    elif train["backend"] == "hf":
        from jobs.adapters.trainer import train as train_hf

        task.export_environment()
        result = train_hf(task.ctx, train, data, tokenizer, log=task.log, tracking=tracking)
    else:
        result = nanotron.run_nanotron(task, train, tokenizer)
    retention.prune_by(keep, task.log)  # and at the end: checkpoints an evaluation scored meanwhile
    return {"campaign": task.spec.get("campaign"), "overrides": task.spec["overrides"][task.point], "seed": train["seed"],
            **result}
