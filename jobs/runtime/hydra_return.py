"""A Hydra callback that keeps what the app's task function returned: kind=hydra_app (and the Hydra
launcher plugin's tasks) add it to the app's command line as

    +hydra.callbacks.launcher_return={_target_: jobs.runtime.hydra_return.SaveReturn, path: <file>}

so Hydra calls `on_job_end` in the app's own process with the job's `JobReturn` (Hydra's callback API,
hydra.experimental.callback.Callback, Hydra >= 1.1), and the task reads the file into its result.json.
Written: {"status": "COMPLETED", "return_value": <the value, when JSON can hold it>} or with
"return_repr" (repr, cut at 10,000 characters) when it cannot; {"status": "FAILED", "error": <repr>} for
a task function that raised. Imported only by Hydra inside the app's interpreter."""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback

REPR_MAX = 10_000


class SaveReturn(Callback):
    def __init__(self, path: str) -> None:
        self.path = path

    def on_job_end(self, config: Any, job_return: JobReturn, **kwargs: Any) -> None:
        if job_return.status == JobStatus.COMPLETED:
            value = job_return.return_value
            try:
                record = {"status": "COMPLETED", "return_value": json.loads(json.dumps(value, allow_nan=False))}
            except (TypeError, ValueError):  # not JSON: a tensor, a dataclass, nan ...
                record = {"status": "COMPLETED", "return_repr": repr(value)[:REPR_MAX]}
        else:
            record = {"status": str(job_return.status.name), "error": repr(job_return._return_value)[:REPR_MAX]}
        folder = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".return.")
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
        os.replace(tmp, self.path)
