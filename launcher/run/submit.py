"""Hand requests to the scheduler in topological order; all or nothing."""
from __future__ import annotations

import itertools
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
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
    failed call queued anyway: SubmissionError.queued), record them as rolled back, and say why.

    The parts of one stage (MaxArraySize chunks, resource groups) wait on none of each other: they go
    to the scheduler `backend.concurrent_submits` at a time (Slurm: 4 sbatch calls at once; each waits
    on slurmctld, ~4-10 ms on an idle controller, more on a busy one), each recorded in the ledger as
    soon as its call returns; the next stage starts when every part of this one is recorded."""
    submitted: Dict[Tuple[str, int], str] = {}
    width = max(1, int(getattr(backend, "concurrent_submits", 1)))

    def record(req: JobRequest, job_id: str, dep: Optional[str], **extra) -> None:
        run.append_ledger({"job_id": job_id, "stage": req.stage, "chunk": req.chunk, "offset": req.offset,
                           "tasks": req.tasks, "dependency": dep, "script": str(req.script), "batch": batch, **extra})

    with ThreadPoolExecutor(max_workers=width) as pool:
        for _, wave in itertools.groupby(requests, key=lambda r: r.stage):
            wave = list(wave)
            deps = [dependency_string(req, plan, submitted, active or {}) for req in wave]  # parents: earlier waves
            outcomes = _submit_wave(backend, wave, deps, pool if width > 1 and len(wave) > 1 else None,
                                    lambda i, job_id: record(wave[i], job_id, deps[i]))
            for i, (job_id, _) in enumerate(outcomes):
                if job_id is not None:
                    submitted[(wave[i].stage, wave[i].chunk)] = job_id
            failed = next((i for i, (_, error) in enumerate(outcomes) if error is not None), None)
            if failed is not None:
                strays = {}
                for i, (_, error) in enumerate(outcomes):
                    for j in getattr(error, "queued", None) or []:
                        if j not in submitted.values() and j not in strays:
                            strays[j] = i
                for j, i in strays.items():  # recorded like any other before it is cancelled
                    record(wave[i], j, deps[i], found_by="squeue")
                _roll_back(run, backend, batch, wave[failed], outcomes[failed][1], list(submitted.values()), list(strays))
            for i, (job_id, _) in enumerate(outcomes):
                echo(f"  {wave[i].stage:<16} job {job_id:<8} array {len(wave[i].tasks):>5} task(s)"
                     + (f"  --dependency={deps[i]}" if deps[i] else ""))
    return list(submitted.values())


def _submit_wave(backend, wave: List[JobRequest], deps: List[Optional[str]], pool, recorded) -> List[tuple]:
    """[(job id or None, exception or None)] per request of one stage, submitted one after another (no
    pool) or at once; `recorded(i, job_id)` is called in this thread for each job as soon as its call
    returns. When interrupted (Ctrl-C), the calls not started yet are dropped (as one after another,
    nothing more is submitted) and the calls under way are waited for and their jobs recorded first."""
    outcomes: List[tuple] = [(None, None)] * len(wave)
    if pool is None:
        for i, req in enumerate(wave):
            try:
                outcomes[i] = (backend.submit(req.script, deps[i]), None)
            except Exception as e:  # noqa: BLE001 - rolled back by the caller, then reported
                outcomes[i] = (None, e)
                return outcomes  # the later parts are not submitted
            recorded(i, outcomes[i][0])
        return outcomes
    return _submit_at_once(backend, wave, deps, pool, recorded, outcomes)


def _submit_at_once(backend, wave: List[JobRequest], deps: List[Optional[str]], pool, recorded,
                    outcomes: List[tuple]) -> List[tuple]:
    """`_submit_wave` with a pool. Each call hands its outcome to this thread through a queue, so a job is
    recorded whenever its call returned, even if an interrupt came while the calls were being started;
    after an interrupt a call that has not started is not made (`stop`), and the ones under way
    (`running`) are waited for."""
    returned: queue.Queue = queue.Queue()
    lock = threading.Condition()
    state = {"stop": False, "running": 0}

    def call(i: int) -> None:
        with lock:
            if state["stop"]:
                return
            state["running"] += 1
        try:
            returned.put((i, backend.submit(wave[i].script, deps[i]), None))
        except Exception as e:  # noqa: BLE001 - rolled back by the caller, then reported
            returned.put((i, None, e))
        finally:
            with lock:
                state["running"] -= 1
                lock.notify_all()

    def take(i: int, job_id: Optional[str], error) -> None:
        if error is None:
            recorded(i, job_id)
        outcomes[i] = (job_id, error)

    try:
        for i in range(len(wave)):
            pool.submit(call, i)
        for _ in wave:
            take(*returned.get())
    except BaseException:  # an interrupt: what the calls under way queued is recorded before it propagates
        with lock:
            state["stop"] = True
            lock.wait_for(lambda: state["running"] == 0)
        while not returned.empty():
            take(*returned.get())
        raise
    return outcomes


def _roll_back(run: Run, backend, batch: str, req: JobRequest, e: BaseException, submitted: List[str],
               stray: List[str]) -> None:
    """Cancel the batch's queued jobs after request `req` failed with `e`; SubmissionError either way."""
    queued = submitted + stray
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
