"""Hand requests to the scheduler in topological order; all or nothing."""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from launcher.errors import SubmissionError
from launcher.plan.model import Plan
from launcher.plan.render import JobRequest
from launcher.run.rundir import Run


def dependency_string(req: JobRequest, plan: Plan, submitted: Dict[Tuple[str, int], str],
                      active: Dict[str, List[Tuple[str, int]]]) -> Optional[str]:
    """Slurm --dependency for a request: parents' jobs from this batch plus their still-active jobs,
    and the jobs outside the run the stage waits on (after: {job:N: kind}; another run's jobs computing
    points it needs: StagePlan.inflight)."""
    parts = []
    for kind, parent, chunk in req.deps:
        ids = [jid for (stage, c), jid in submitted.items() if stage == parent and chunk in (None, c)]
        ids += [jid for jid, c in active.get(parent, []) if chunk in (None, c) and jid not in ids]
        if ids:
            parts.append(":".join([kind, *ids]))
    external: Dict[str, List[str]] = {}
    for jid, kind in {**plan.stages[req.stage].external, **plan.stages[req.stage].inflight}.items():
        external.setdefault(kind, []).append(jid)
    parts += [":".join([kind, *ids]) for kind, ids in external.items()]
    if plan.stages[req.stage].singleton:
        parts.append("singleton")
    return ",".join(parts) or None


def submit_all(run: Run, plan: Plan, backend, requests: List[JobRequest], batch: str,
               active: Optional[Dict[str, List[Tuple[str, int]]]] = None, echo=print) -> List[str]:
    """Submit every request; if one fails, cancel the jobs this batch already queued (and any job the
    failed call queued anyway: SubmissionError.queued), record them as rolled back, and say why."""
    submitted: Dict[Tuple[str, int], str] = {}

    def record(req: JobRequest, job_id: str, dep: Optional[str], **extra) -> None:
        run.append_ledger({"job_id": job_id, "stage": req.stage, "chunk": req.chunk, "offset": req.offset,
                           "tasks": req.tasks, "dependency": dep, "script": str(req.script), "batch": batch, **extra})

    for req in requests:
        dep = dependency_string(req, plan, submitted, active or {})
        try:
            job_id = backend.submit(req.script, dep)
        except Exception as e:  # noqa: BLE001 - roll back on any failure, then report it
            # A job the failed call queued anyway is recorded like any other before it is cancelled:
            # if the cancel fails too, the ledger still has it.
            stray = [j for j in getattr(e, "queued", []) if j not in submitted.values()]
            for j in stray:
                record(req, j, dep, found_by="squeue")
            queued = list(submitted.values()) + stray
            try:
                if queued:
                    backend.cancel(queued)
            except Exception as ce:  # noqa: BLE001 - the jobs stay recorded as submitted: status shows them
                run.append_ledger({"rolled_back": [], "batch": batch, "error": str(e), "failed_stage": req.stage,
                                   "cancel_error": str(ce)})
                raise SubmissionError(
                    f"submitting stage '{req.stage}' (chunk {req.chunk}) failed: {e}\n"
                    f"and cancelling the {len(queued)} job(s) already queued failed too: {ce}\n"
                    f"they stay in the run's ledger: `launcher cancel {run.id}` or `scancel {' '.join(queued)}`") from e
            run.append_ledger({"rolled_back": queued, "batch": batch, "error": str(e), "failed_stage": req.stage,
                               "failed_chunk": req.chunk, "failed_script": str(req.script)})
            raise SubmissionError(
                f"submitting stage '{req.stage}' (chunk {req.chunk}) failed: {e}\n"
                f"cancelled the {len(queued)} job(s) this submission had already queued"
                + (f" ({', '.join(queued)})" if queued else "")
                + (f"; job(s) {', '.join(stray)} queued by the failed sbatch call itself" if stray else "")) from e
        submitted[(req.stage, req.chunk)] = job_id
        record(req, job_id, dep)
        echo(f"  {req.stage:<16} job {job_id:<8} array {len(req.tasks):>5} task(s)"
             + (f"  --dependency={dep}" if dep else ""))
    return list(submitted.values())
