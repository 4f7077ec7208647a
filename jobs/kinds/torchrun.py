"""kind=torchrun: the stage's script (`launch.script`: a path, or `-m module`) with its args under torchrun
on every node of the allocation (jobs/adapters/torchrun.py), `launch.nproc_per_node` processes per node
(default: the node's GPUs, or 1). Standard library only: torch runs in torchrun's workers."""
from __future__ import annotations

reruns_when_complete = False
resolves_hub_references = True


def run(task) -> None:
    from jobs.adapters.torchrun import launch

    spec_launch = task.payload["launch"]
    script = spec_launch["script"]
    target = ["-m", script[3:].strip()] if script.startswith("-m ") else [script]
    gpus = task.spec["resources"]["gpus_per_node"]
    task.export_environment()
    launch(task, target + list(spec_launch["args"]), nproc_per_node=spec_launch["nproc_per_node"] or gpus or 1,
           port_base=task.spec["rdzv_port_base"])
