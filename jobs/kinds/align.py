"""kind=align on the compute node: one `accelerate launch` per node runs jobs.adapters.trl on every
process, with the accelerate config the launcher rendered at submission
(stages/<stage>/accelerate/<point>.yaml) plus what only the allocation knows: --machine_rank (the
node's SLURM_NODEID), --main_process_ip (the allocation's first node, from scontrol) and
--main_process_port (rdzv_port_base + job id % 10000, like torchrun stages).

The stop signal is passed as a file, not forwarded: accelerate's launcher would die of SIGUSR2, and
torchrun under it starts workers in their own sessions. jobs.task creates the file; the worker
checkpoints at its next step end and exits; this task then requeues. Standard library only.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Dict

from jobs import layout
from jobs.adapters.torchrun import node_hosts, rdzv_port, run_child


def resolve(task) -> Dict[str, Any]:
    """The stage's align section with its folder placeholders filled in, and the paths checked."""
    a = layout.Folders(task.spec, task.point).fill(task.payload["align"])
    if not (Path(a["model"]) / "config.json").is_file():
        raise FileNotFoundError(f"align.model: no Hugging Face model (config.json) in {a['model']}")
    if not Path(a["data"]).is_file():
        raise FileNotFoundError(f"align.data: {a['data']} does not exist")
    if a["chat_template"] not in (None, "builtin") and not Path(a["chat_template"]).is_file():
        raise FileNotFoundError(f"align.chat_template: {a['chat_template']} does not exist")
    return a


def argv(task, hosts: list[str], node_rank: int, port: int) -> list[str]:
    config = layout.accelerate_config(task.run_dir, task.stage, task.point)
    threads = int(task.spec.get("resources", {}).get("cpus_per_task") or 1)
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config),
            "--machine_rank", str(node_rank), "--main_process_ip", hosts[0], "--main_process_port", str(port),
            "--num_cpu_threads_per_process", str(threads), "-m", "jobs.adapters.trl"]


def run(task) -> None:
    from jobs.task import log

    a = resolve(task)
    env = task.environment()
    hosts = node_hosts(env)
    node_rank = 0 if env.get("LAUNCHER_BACKEND") == "local" else int(env.get("SLURM_NODEID") or 0)
    port = rdzv_port(task.job_id if env.get("LAUNCHER_BACKEND") == "local" else env.get("SLURM_JOB_ID", task.job_id),
                     task.spec.get("rdzv_port_base", 20000))
    stop_file = task.ctx.checkpoint_dir / f"STOP-{node_rank}"
    stop_file.unlink(missing_ok=True)  # a request of an earlier attempt
    task.stop_file = stop_file
    env["LAUNCHER_ALIGN_ORDER"] = json.dumps({
        "align": a, "output_dir": str(task.ctx.output_dir), "final_output_dir": str(task.final_out),
        "checkpoint_dir": str(task.ctx.checkpoint_dir),
        "stop_file": str(stop_file), "restarts": task.restarts})
    env.setdefault("HF_HUB_OFFLINE", "1")  # the model and data are local: never wait on a hub
    cmd = argv(task, hosts, node_rank, port)
    log(f"align: {a['trainer']} on {a['model']}; node {node_rank} of {len(hosts)}, main process "
        f"{hosts[0]}:{port}")
    log("align: " + " ".join(cmd))
    run_child(task, cmd, env, f"accelerate launch exited with status {{rc}} on node {node_rank}; the trainer's "
                              f"error is in this task's log above")
    return None  # the worker wrote result.json (main process)
