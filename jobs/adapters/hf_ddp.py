"""kind=pretrain, backend=hf, data parallel (train.parallelism.dp > 1): transformers' Trainer under
torchrun with DDP, dp / nodes processes on every node of the allocation (gloo on CPU, NCCL on GPUs).

Node side (`launch`, standard library only): the stage's sbatch starts one jobs.task per node; each
writes the worker's arguments and runs torchrun (jobs/adapters/torchrun.py: c10d rendezvous on the
first node) with `python -m jobs.adapters.hf_ddp <args.json>` as the workers. The stop signal reaches
every worker (torchrun's --signals-to-handle); the workers agree on the step to stop at, rank 0 marks
the checkpoint, and they exit with STOPPED_EXIT, which the node task turns into a requeue. Rank 0 writes
the model into the task's output and the result next to the arguments; the first node returns it.

Worker side (`main`): a TaskContext like the node task's, the stop signal and SIGTERM set its stop
flag, then jobs/adapters/trainer.py's train() does the rest (it joins the process group).
"""
from __future__ import annotations

import json
import os
import signal
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any, Dict, Optional

from jobs import layout
from jobs.context import Requeue, TaskContext

STOPPED_EXIT = 75  # EX_TEMPFAIL: the workers saved a checkpoint on a stop request; requeue


def _paths(ctx: TaskContext, job_id: str) -> tuple[Path, Path]:
    """(the workers' arguments, rank 0's result): beside the checkpoints, one pair per attempt."""
    base = Path(ctx.checkpoint_dir).parent / f".hf-ddp-{Path(ctx.checkpoint_dir).name}-{job_id}"
    return base.with_suffix(".args.json"), base.with_suffix(".result.json")


def launch(task, train: Dict[str, Any], data: Dict[str, float], tokenizer: str,
           tracking: Optional[Dict[str, Any]] = None) -> Optional[Dict[str, Any]]:
    """Train this task's model data parallel; the result on the first node, None on the others.
    Raises Requeue after a stop request the workers honoured, RuntimeError when a rank failed."""
    from jobs.adapters.torchrun import launch as torchrun

    ctx = task.ctx
    resources = task.spec["resources"]
    per_node = max(1, int(train["parallelism"]["dp"]) // max(1, int(resources["nodes"])))
    job = str(task.job_id).replace("/", "_")
    args_path, result_path = _paths(ctx, job)
    Path(ctx.checkpoint_dir).mkdir(parents=True, exist_ok=True)
    # not asdict(): it deep-copies the stop Event, which cannot be copied
    ctx_fields = {f.name: (str(v) if isinstance(v, Path) else v) for f in fields(ctx)
                  if f.name != "stop_requested" for v in [getattr(ctx, f.name)]}
    ctx_fields["inputs"] = {k: str(v) for k, v in ctx.inputs.items()}
    layout.atomic_write_json(args_path, {"ctx": ctx_fields, "train": train, "data": data, "tokenizer": tokenizer,
                                         "result": str(result_path), "tracking": tracking,
                                         "stop_signal": task.spec["requeue"]["signal"]})
    result_path.unlink(missing_ok=True)
    try:
        torchrun(task, ["-m", "jobs.adapters.hf_ddp", str(args_path)], nproc_per_node=per_node,
                 port_base=task.spec["rdzv_port_base"])
    except RuntimeError:
        if ctx.should_stop() or task.terminated:
            raise Requeue()
        raise
    if ctx.should_stop():  # the workers stopped early and saved: continue in the next attempt
        raise Requeue()
    if task.rank != 0:
        return None
    result = layout.read_json(result_path)
    if result is None:
        raise RuntimeError(f"the DDP workers ended without rank 0's result ({result_path})")
    result_path.unlink(missing_ok=True)
    args_path.unlink(missing_ok=True)
    return result


def main(argv: Optional[list] = None) -> int:
    """A torchrun worker: python -m jobs.adapters.hf_ddp <args.json>."""
    from jobs.adapters.trainer import train as train_hf
    from jobs.runtime.log import log

    argv = sys.argv[1:] if argv is None else argv
    args = json.loads(Path(argv[0]).read_text())
    given = dict(args["ctx"])
    for k in ("run_dir", "output_dir", "checkpoint_dir"):
        given[k] = Path(given[k])
    given["inputs"] = {k: Path(v) for k, v in given["inputs"].items()}
    ctx = TaskContext(**given)
    rank = int(os.environ.get("RANK", "0"))

    def stop(signum, _frame):
        if not ctx.stop_requested.is_set() and rank == 0:
            log(f"rank 0: caught {signal.Signals(signum).name}: stopping at the next step, together")
        ctx.stop_requested.set()

    signal.signal(getattr(signal, "SIG" + str(args["stop_signal"]).upper().removeprefix("SIG")), stop)
    signal.signal(signal.SIGTERM, stop)
    quiet = (lambda _msg: None) if rank else log  # one log line per event, not one per rank
    try:
        result = train_hf(ctx, args["train"], args["data"], args["tokenizer"], log=quiet,
                          tracking=args.get("tracking"))
    except Requeue:
        return STOPPED_EXIT
    if rank == 0:
        layout.atomic_write_json(Path(args["result"]), result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
