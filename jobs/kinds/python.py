"""kind=python: the stage's callable (`target: package.module:function`) called in this process with the
task's context (jobs.context.TaskContext); a dict it returns becomes result.json. It learns of the stop
request from ctx.should_stop(), saves, and calls ctx.requeue()."""
from __future__ import annotations

from typing import Any

from jobs.runtime.targets import locate

reruns_when_complete = False
resolves_hub_references = True


def run(task) -> Any:
    fn = locate(task.payload["target"])
    task.export_environment()
    return fn(task.ctx)
