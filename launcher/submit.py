"""Hand requests to the scheduler in topological order; all or nothing."""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from .errors import SubmissionError
from .plan import Plan
from .render import JobRequest
from .rundir import Run


def dependency_string(req: JobRequest, plan: Plan, submitted: Dict[Tuple[str, int], str],
                      active: Dict[str, List[Tuple[str, int]]]) -> Optional[str]:
    """Slurm --dependency for a request: parents' jobs from this batch plus their still-active jobs."""
    parts = []
    for kind, parent, chunk in req.deps:
        ids = [jid for (stage, c), jid in submitted.items() if stage == parent and chunk in (None, c)]
        ids += [jid for jid, c in active.get(parent, []) if chunk in (None, c) and jid not in ids]
        if ids:
            parts.append(":".join([kind, *ids]))
    if plan.stages[req.stage].singleton:
        parts.append("singleton")
    return ",".join(parts) or None


def submit_all(run: Run, plan: Plan, backend, requests: List[JobRequest], batch: str,
               active: Optional[Dict[str, List[Tuple[str, int]]]] = None, echo=print) -> List[str]:
    """Submit every request; if one fails, cancel the jobs this batch already queued and say why."""
    submitted: Dict[Tuple[str, int], str] = {}
    for req in requests:
        dep = dependency_string(req, plan, submitted, active or {})
        try:
            job_id = backend.submit(req.script, dep)
        except Exception as e:  # noqa: BLE001 - roll back on any failure, then report it
            queued = list(submitted.values())
            if queued:
                backend.cancel(queued)
            run.append_ledger({"rolled_back": queued, "batch": batch, "error": str(e)})
            raise SubmissionError(
                f"submitting stage '{req.stage}' (chunk {req.chunk}) failed: {e}\n"
                f"cancelled the {len(queued)} job(s) this submission had already queued"
                + (f" ({', '.join(queued)})" if queued else "")) from e
        submitted[(req.stage, req.chunk)] = job_id
        run.append_ledger({"job_id": job_id, "stage": req.stage, "chunk": req.chunk, "offset": req.offset,
                           "tasks": req.tasks, "dependency": dep, "script": str(req.script), "batch": batch})
        echo(f"  {req.stage:<16} job {job_id:<8} array {len(req.tasks):>5} task(s)"
             + (f"  --dependency={dep}" if dep else ""))
    return list(submitted.values())
