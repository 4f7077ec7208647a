"""kind=preprocess: one array task is one datatrove rank of the stage's blocks (jobs/adapters/datatrove.py);
the rank's datatrove stats become result.json. datatrove is imported in run(), in the stage's environment."""
from __future__ import annotations

from typing import Any, Dict

reruns_when_complete = False
resolves_hub_references = True


def run(task) -> Dict[str, Any]:
    from jobs.adapters import datatrove

    task.export_environment()
    return datatrove.run_rank(task.spec, task.payload, task.point, task.index, task.spec["tasks_per_point"])
