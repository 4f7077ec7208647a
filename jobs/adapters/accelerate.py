"""`accelerate launch` for one node of an align stage: the accelerate config the launcher rendered at
submission (stages/<stage>/accelerate/<point>.yaml) plus what only the allocation knows: --machine_rank
(the node's rank), --main_process_ip (the allocation's first node) and --main_process_port (the
rendezvous port). Standard library only: accelerate runs in the child process."""
from __future__ import annotations

import sys
from typing import Any, Dict, List

from jobs import layout


def argv(task, hosts: List[str], node_rank: int, port: int, module: str = "jobs.adapters.trl",
         python: str = sys.executable) -> List[str]:
    """accelerate's launcher running `python -m <module>` on every process of this node; `task` gives
    the run directory, stage, sweep point and the stage's resources (cpus_per_task: threads per process)."""
    config = layout.accelerate_config(task.run_dir, task.stage, task.point)
    resources: Dict[str, Any] = task.spec.get("resources", {}) or {}
    threads = int(resources.get("cpus_per_task") or 1)
    return [python, "-m", "accelerate.commands.launch", "--config_file", str(config),
            "--machine_rank", str(node_rank), "--main_process_ip", hosts[0], "--main_process_port", str(port),
            "--num_cpu_threads_per_process", str(threads), "-m", module]
