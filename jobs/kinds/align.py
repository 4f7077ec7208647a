"""kind=align on the compute node: one `accelerate launch` per node (jobs/adapters/accelerate.py) runs
jobs.adapters.trl on every process. The main process is the allocation's first node
(jobs/runtime/allocation.py), its port rdzv_port_base + job id % 10000, like torchrun stages
(jobs/runtime/ports.py).

The stop signal is passed as a file, not forwarded: accelerate's launcher would die of SIGUSR2, and
torchrun under it starts workers in their own sessions. jobs.task creates the file; the worker
checkpoints at its next step end and exits; this task then requeues. Standard library only.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

from jobs import layout
from jobs.adapters import accelerate
from jobs.adapters import tracking as trackers
from jobs.runtime.allocation import is_local, node_hosts, node_rank
from jobs.runtime import retention
from jobs.runtime.ports import rdzv_port

reruns_when_complete = False
resolves_hub_references = True


def resolve(task) -> Dict[str, Any]:
    """The stage's align section with its folder placeholders filled in, and the paths checked."""
    a = layout.Folders(task.spec, task.point).fill(task.payload["align"])
    if not (Path(a["model"]) / "config.json").is_file():
        raise FileNotFoundError(f"align.model: no Hugging Face model (config.json) in {a['model']}")
    if not Path(a["data"]).is_file():
        raise FileNotFoundError(f"align.data: {a['data']} does not exist")
    if a["chat_template"] not in (None, "builtin") and not Path(a["chat_template"]).is_file():
        raise FileNotFoundError(f"align.chat_template: {a['chat_template']} does not exist")
    for i, entry in enumerate(a.get("rewards") or [] if a["trainer"] in ("grpo", "rloo") else []):
        if "model" in entry and not (Path(entry["model"]) / "config.json").is_file():
            raise FileNotFoundError(f"align.rewards.{i}.model: no Hugging Face model (config.json) in {entry['model']}")
    return a


def run(task) -> None:
    a = resolve(task)
    env = task.environment()
    hosts = node_hosts(env)
    rank = node_rank(env)
    port = rdzv_port(task.job_id if is_local(env) else env.get("SLURM_JOB_ID", task.job_id),
                     task.spec.get("rdzv_port_base", 20000))
    stop_file = task.ctx.checkpoint_dir / f"STOP-{rank}"
    # transformers' tracker callback in TRL's trainer (launcher/plan/tracking.py); the first node writes the config
    tracking = (trackers.prepare(task.spec, task.point, log=task.log) if rank == 0
                else trackers.trainer_settings(task.spec, task.point))
    env["LAUNCHER_ALIGN_ORDER"] = json.dumps({
        "align": a, "output_dir": str(task.ctx.output_dir), "final_output_dir": str(task.final_out),
        "checkpoint_dir": str(task.ctx.checkpoint_dir),
        "stop_file": str(stop_file), "restarts": task.restarts, "tracking": tracking,
        "progress_file": str(layout.progress_path(task.run_dir, task.stage, task.task))})
    if (task.payload.get("watchdog") or {}).get("stall_s"):
        env["LAUNCHER_WATCHDOG"] = "1"  # each rank registers the stack dump (jobs/runtime/stacks.py)
    keep = retention.order(task.spec, task.stage, task.point, task.run_dir)
    if keep:  # the worker's main process prunes after each marked checkpoint (jobs/adapters/trl.py)
        env[retention.ENV] = json.dumps(keep)
    env.setdefault("HF_HUB_OFFLINE", "1")  # the model and data are local: never wait on a hub
    if len(hosts) > 1 and not task.spec.get("resources", {}).get("gpus_per_node"):
        # Several CPU nodes (MULTI_CPU): accelerate's launcher starts one process per node and leaves
        # its rank to MPI's variables; these are the ones accelerate reads first (utils/environment.py
        # get_cpu_distributed_information), with its --main_process_ip/port as the rendezvous.
        env.update({"RANK": str(rank), "WORLD_SIZE": str(len(hosts)), "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"})
    cmd = accelerate.argv(task, hosts, rank, port)
    task.log(f"align: {a['trainer']} on {a['model']}; node {rank} of {len(hosts)}, main process "
             f"{hosts[0]}:{port}")
    task.log("align: " + " ".join(cmd))
    task.run_child(cmd, env, f"accelerate launch exited with status {{rc}} on node {rank}; the trainer's "
                             f"error is in this task's log above", stop="file", stop_file=stop_file)
    if rank == 0:
        retention.prune_by(keep, task.log)  # at the end too: checkpoints an evaluation scored meanwhile
    return None  # the worker wrote result.json (main process)
