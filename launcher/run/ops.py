"""The verbs: plan, run, resume, cancel. Compose → plan → preflight → write → submit."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from jobs import layout, point_configs

from launcher import backends
from launcher.run import compose_cache, runindex
from launcher.config import configdirs
from launcher.plan import health, team_cache
from launcher.config.compose import compose_each, sweep_points
from launcher.errors import ConfigError, ConfigErrors, LauncherError, SubmissionError
from launcher.plan.model import Plan, build_plan
from launcher.plan.preflight import preflight
from launcher.plan.render import JobRequest, build_requests, write_stage_files
from launcher.sbatch.lognames import unsafe_path_reason
from launcher.run.rundir import SUBMISSION_FAILED, Run, code_version, new_run_id
from launcher.run.status import ACTIVE, RunStatus, collect, parent_tasks
from launcher.run.submit import submit_all

RESUMABLE = ("failed", "cancelled", "lost", "missing")


def backend_for(cluster: dict, run_dir: Path, accounting: Optional[bool] = None):
    """The scheduler of a cluster profile (launcher/backends.py). `accounting`: False when the cluster
    is known to have no accounting (run.json), so status asks squeue only."""
    return backends.for_cluster(cluster, run_dir, accounting=accounting)


@dataclass
class Prepared:
    plan: Plan
    configs: list
    run_root: Path
    chunk_size: int
    errors: list
    accounting: Optional[bool] = None  # the cluster keeps accounting (sacct answers); None: not known


def prepare(overrides: Sequence[str], multirun: bool, rerun: Sequence[str] = ()) -> Prepared:
    """Compose every sweep point, build the plan, read the cluster and run preflight. `rerun`: stages
    computed again although another run has their output (launcher/run/cache.py)."""
    early = _early_backend(overrides)
    points, configs = compose_cache.compose_points(overrides, multirun)
    return prepare_configs(configs, points, rerun, early)


def _early_backend(overrides: Sequence[str]) -> Optional[tuple]:
    """(the guessed profile's backend and slurm_conf, its backend already asking what preflight reads:
    Backend.prefetch) while Hydra composes: the profile that `cluster=<name>` names (the site default
    puts one first), read from its file as written; None when no single profile is named or an override
    changes the cluster's backend or slurm_conf. prepare_configs uses it only when the composed profile
    has that backend and slurm_conf."""
    names = [o.split("=", 1)[1] for o in overrides if o.startswith("cluster=")]
    changed = [o for o in overrides if o.lstrip("+~").startswith(("cluster.backend", "cluster.slurm_conf", "cluster@"))]
    if len(names) != 1 or changed or "," in names[0]:
        return None
    from launcher.config.compose import profile_files, profile_setting
    from launcher.config.schema import Cluster

    if names[0] not in profile_files():
        return None
    guess = {"backend": profile_setting(names[0], "backend") or Cluster.backend,
             "slurm_conf": profile_setting(names[0], "slurm_conf")}
    try:
        if not backends.get(guess["backend"]).prefetches:
            return None  # nothing to ask early (the local scheduler)
        backend = backend_for(guess, Path("."))
    except Exception:  # noqa: BLE001 - an unknown backend: build_plan names the key
        return None
    backend.prefetch()
    return guess, backend


def prepare_configs(configs: List[dict], points: Sequence[Sequence[str]], rerun: Sequence[str] = (),
                    early: Optional[tuple] = None) -> Prepared:
    """The same from configs composed elsewhere (one resolved config per point, launcher.config.compose; the
    Hydra launcher plugin), each point named by its overrides. `early`: `_early_backend`'s guess."""
    from launcher.run import cache

    from concurrent.futures import ThreadPoolExecutor

    from launcher.plan.preflight import check_common

    _refuse_secrets(configs)
    run_root = Path(configs[0]["run_root"]).resolve()
    cluster = configs[0]["cluster"]
    if early is not None and all(cluster.get(k) == v for k, v in early[0].items()):
        backend = early[1]  # the guess was right: its answers are on their way
    else:
        backend = _asking_backend(cluster, run_root)
    plan = build_plan(configs, points)
    # preflight's own checks read only what build_plan made (the environments' interpreters; kind=command's
    # `bash -n` over every point's command, ~0.8 s at 10,000 points): beside the content keys and Slurm's
    # answers, which wait on other processes too
    with ThreadPoolExecutor(max_workers=1) as pool:
        common = pool.submit(check_common, plan, run_root)
        keyed(plan, run_root)
        cache.apply(plan, run_root, rerun)
        return _check(plan, configs, run_root, common.result, backend)


def _asking_backend(cluster: dict, run_root: Path):
    """The profile's scheduler, already asking what preflight reads (Backend.prefetch) while the plan is
    built; None for a profile the plan refuses (its error comes from build_plan)."""
    try:
        backend = backend_for(cluster, run_root)
    except Exception:  # noqa: BLE001 - an unknown backend, a bad profile: build_plan names the key
        return None
    backend.prefetch()
    return backend


def keyed(plan: Plan, run_root: Path) -> Plan:
    """The plan with its content keys and shared points (launcher/plan/keys.py), from the files as they are
    now (launcher/plan/key_facts.py)."""
    from launcher.plan import key_facts, keys

    keys.assign(plan, key_facts.gather(plan, str(run_root)))
    return plan


def path_errors(run_root: Path) -> List[ConfigError]:
    """The run directory is named in Slurm filename patterns (log paths): refuse a run root that cannot
    be (a `%` can: it is escaped; run_name is checked by the plan, letters, digits and `_.-` only)."""
    why = unsafe_path_reason(str(run_root))
    return [ConfigError(f"{str(run_root)!r} {why}", key="run_root")] if why else []


def _refuse_secrets(configs: list) -> None:
    """Before anything is written (`plan` writes its folder even when preflight finds problems): a
    secret's value in the config would land in every file of the run."""
    from launcher.plan import secrets

    errors = secrets.check(configs)
    if errors:
        raise ConfigErrors(errors)


def _check(plan: Plan, configs: list, run_root: Path, common: Optional[Callable[[], List[ConfigError]]] = None,
           backend=None) -> Prepared:
    """Preflight against the cluster; `common` gives preflight.check_common's answer when the caller
    started it already, `backend` the scheduler when the caller made it (`_asking_backend`)."""
    backend = backend or backend_for(plan.cluster, run_root)
    facts = backend.facts()
    for warning in facts.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    warnings: List[str] = []
    errors = (preflight(plan, run_root, facts.info, warnings=warnings, backend=backend, common=common,
                        **backend.checks(facts))
              + _external_jobs(plan, backend))
    for line in warnings:  # limits that delay the run without refusing it
        print(f"warning: {line}", file=sys.stderr)
    errors = path_errors(run_root) + errors
    chunk = plan.cluster.get("max_array_size") or facts.max_array_size
    return Prepared(plan=plan, configs=configs, run_root=run_root, chunk_size=chunk, errors=errors,
                    accounting=facts.accounting)


def _external_jobs(plan: Plan, backend) -> List[ConfigError]:
    """Jobs outside the run that stages wait on (after: {job:N: kind}) exist and can satisfy the edge
    (one squeue call, and sacct for the ones slurmctld no longer holds); an edge that holds already on a
    job slurmctld has forgotten is not passed to sbatch (which would refuse it), and said on stderr."""
    errors, met = backend.check_external(plan)
    for stage, job, why in met:
        del plan.stages[stage].external[job]
        print(f"note: stage '{stage}': {why}; submitted without that dependency", file=sys.stderr)
    return errors


def _write_run(prep: Prepared, run_dir: Path, run_id: str, overrides: Sequence[str], multirun: bool,
               origin: Optional[dict] = None) -> None:
    run_dir.mkdir(parents=True)
    point_configs.write(run_dir, prep.configs)  # one file, one fsync, before the plan that names the points
    layout.atomic_write_json(run_dir / "plan.json", prep.plan.to_json(), compact=prep.plan.large)
    layout.atomic_write_json(run_dir / "run.json", {
        "id": run_id, "created": time.time(), "pipeline": prep.plan.pipeline, "cluster": prep.plan.cluster["name"],
        "backend": prep.plan.cluster["backend"], "overrides": list(overrides), "multirun": multirun,
        "points": prep.plan.points, "chunk_size": prep.chunk_size, "code": code_version(),
        "accounting": prep.accounting, "config_dirs": [str(d) for d in configdirs.current()],
        "campaign": prep.configs[0].get("campaign") or run_id,
        # who composed the configs: absent for the launcher's own conf tree (resume composes them again
        # from `overrides`); else config/points.json holds the configs, and resume reads them back
        **({"origin": origin} if origin else {})})


def _snapshot_and_record(plan: Plan, run_dir: Path) -> None:
    """Code as it is now, and each stage's software, into the run directory."""
    from launcher.config import environments
    from launcher.plan import snapshot

    code = snapshot.take(run_dir, plan.code, exclude=[run_dir.parent])  # never the run root itself
    envs = environments.describe({name: s.environment for name, s in plan.stages.items()})
    layout.atomic_write_json(run_dir / "environments.json", {"code": code, **envs})


def all_tasks(plan: Plan) -> Dict[str, List[int]]:
    """The tasks a new run submits: per stage, those of the points that compute their own key (a
    shared point reads the output of the point that computes it)."""
    return {name: s.run_tasks() for name, s in plan.stages.items()}


def make_plan(overrides: Sequence[str], multirun: bool,
              rerun: Sequence[str] = ()) -> tuple[Prepared, Path, List[JobRequest]]:
    """Everything `run` does except submitting: scripts go to <run_root>/plans/<id>/."""
    prep = prepare(overrides, multirun, rerun)
    if any(e.key == "run_root" for e in prep.errors):  # the scripts would have nowhere to go
        raise ConfigErrors(prep.errors)
    run_id = new_run_id(prep.plan.pipeline, "plan")
    plan_dir = prep.run_root / "plans" / run_id
    try:
        _write_run(prep, plan_dir, run_id, overrides, multirun)  # no code snapshot: nothing will run from here
        requests = build_requests(prep.plan, all_tasks(prep.plan), prep.chunk_size)
        write_stage_files(prep.plan, plan_dir, run_id, requests, tag="s0")
    except OSError as e:
        raise LauncherError(f"cannot write the plan into {plan_dir}: {e.strerror or e}") from e
    return prep, plan_dir, requests


def launch(overrides: Sequence[str], multirun: bool, echo: Callable = print,
           rerun: Sequence[str] = ()) -> tuple[Run, Prepared]:
    """Compose, then under the cache lock look up the content keys and submit the rest (a launcher
    started at the same time with the same keys finds these points in flight: launcher/run/inflight.py)."""
    early = _early_backend(overrides)
    points, configs = compose_cache.compose_points(overrides, multirun)
    with cache_locked(configs):
        return launch_prepared(prepare_configs(configs, points, rerun, early), overrides, multirun, echo=echo)


def cache_locked(configs: List[dict]):
    """The cache lock (launcher/run/cache_lock.py) of the configs' run root and team cache_dir."""
    from launcher.run import cache, cache_lock

    root = Path(configs[0]["run_root"]).resolve()
    try:
        root.mkdir(parents=True, exist_ok=True)  # the lock lives there, as the runs will
        dirs = [root]
    except OSError:
        dirs = []  # preflight says why (run_root): nothing is submitted
    return cache_lock.held([*dirs, *cache.roots(configs[0]["cluster"])])


def launch_prepared(prep: Prepared, overrides: Sequence[str], multirun: bool, echo: Callable = print,
                    origin: Optional[dict] = None) -> tuple[Run, Prepared]:
    """Write the run directory, snapshot the code and submit (prepare/prepare_configs made `prep`).
    `origin`: where configs composed outside the conf tree came from (run.json; resume reads the
    recorded configs back instead of composing `overrides` again)."""
    if prep.errors:
        raise ConfigErrors(prep.errors)
    name = prep.configs[0]["run_name"]
    run_id = new_run_id(prep.plan.pipeline, name)
    run = Run(prep.run_root / run_id)
    _write_run(prep, run.path, run_id, overrides, multirun, origin)
    team_cache.link(prep.plan.cluster, run.path)  # the team's runs find its keys (under the cache lock)
    runindex.record(run.path)  # `launcher status <id>` finds it from anywhere, whatever its run root
    try:
        _snapshot_and_record(prep.plan, run.path)
        requests = build_requests(prep.plan, all_tasks(prep.plan), prep.chunk_size)
        write_stage_files(prep.plan, run.path, run_id, requests, tag="s0")
        backend = backend_for(prep.plan.cluster, run.path, accounting=prep.accounting)
        with run.locked():
            submit_all(run, prep.plan, backend, requests, batch="s0", echo=echo)
    except Exception as e:
        if run.submissions():  # jobs stay queued (a cancel that failed): it is a run, status shows them
            raise
        where = run.mark_submission_failed(str(e))
        note = (f"run directory kept for diagnosis: {run.path} ({where.name}); it is not a run: "
                f"`latest` and `launcher runs` skip it")
        if isinstance(e, SubmissionError):
            raise SubmissionError(f"{e}\n{note}", queued=e.queued) from e
        if isinstance(e, LauncherError):
            raise LauncherError(f"{e}\n{note}") from e
        raise
    return run, prep


def run_backend(run: Run, plan: Optional[Plan] = None):
    """The scheduler a run was submitted to (its cluster profile, and whether it keeps accounting)."""
    return backend_for((plan or run.plan()).cluster, run.path, accounting=run.meta.get("accounting"))


def status(run: Run, max_age_s: Optional[float] = None) -> RunStatus:
    """The run's status from its markers and one scheduler query. `max_age_s` (watchers only): a
    scheduler answer another watcher of this run got less than max_age_s ago is used instead of asking
    again (launcher/run/status_cache.py); None asks."""
    backend = run_backend(run)
    if max_age_s:
        from launcher.run.status_cache import SharedQueries

        backend = SharedQueries(backend, run.path, max_age_s)
    return collect(run, backend)


def resume(run: Run, force: bool = False, echo: Callable = print) -> List[str]:
    """Resubmit exactly the tasks with no completion marker that are not queued or running, with
    their dependencies. Refuses to mix outputs of a changed config unless `force`."""
    with run.locked():
        old = run.plan()
        configs = _configs_now(run, old)
        _refuse_secrets(configs)
        new = keyed(build_plan(configs, old.points), run.path.parent)
        changed = sorted(set(new.stages) ^ set(old.stages)
                         | {n for n in new.stages if n in old.stages and new.stages[n].hash != old.stages[n].hash})
        if changed and not force:
            raise LauncherError(
                f"the config of stage(s) {', '.join(changed)} changed since run {run.id} was launched; resuming "
                f"would mix outputs of two configs. Rerun with --force to run those stages (and the stages after "
                f"them) with the new config; markers of the old config stay under stages/<stage>/markers/<hash>.")
        with cache_locked(configs):  # held until the ledger records what is resubmitted
            return _resume(run, old, new, configs, changed, force, echo)


def _resume(run: Run, old: Plan, new: Plan, configs: List[dict], changed: List[str], force: bool,
            echo: Callable) -> List[str]:
    """resume() under the run lock and the cache lock: settle the in-flight sources, resubmit."""
    from launcher.run import cache, inflight

    if changed:  # the changed stages' points may have been computed by another run since
        cache.apply(new, run.path.parent, skip=run.path)
    plan = new if changed else old
    before = old.to_json()
    dropped = inflight.settle(plan)  # in-flight sources that ended since: cached, or computed here
    if dropped:  # another run may have completed (or be computing) the key since
        cache.apply(plan, run.path.parent, skip=run.path, only=dropped)
        echo(f"  {len(dropped)} point(s) another run was computing ended without completing: "
             f"{', '.join(f'{s}[{p}]' for s, p in sorted(dropped))}")
    if changed or dropped:
        layout.atomic_write_json(run.path / f"plan.{int(time.time())}.json", before)
        layout.atomic_write_json(run.path / "plan.json", plan.to_json(), compact=plan.large)
    if force:  # the code of today, too; without --force the run keeps its snapshot
        _snapshot_and_record(plan, run.path)
    prep = _check(plan, configs, run.path.parent)
    if prep.errors:
        raise ConfigErrors(prep.errors)
    backend = run_backend(run, plan)
    st = collect(run, backend, strict=True)  # every job it depends on is one the scheduler knows
    states = {name: s_.tasks for name, s_ in st.stages.items()}
    todo = {name: [t for t, s in tasks.items() if s in RESUMABLE and plan.stages[name].task_of(t) == t]
            for name, tasks in states.items()}  # a shared task is its computing task's copy
    todo = with_servers(plan, todo, states)
    if not any(todo.values()):
        echo(f"nothing to resume: run {run.id} is {st.state.lower()} "
             f"({'every task has its completion marker or was skipped (not needed)' if st.state == 'COMPLETED' else 'tasks are still queued or running'})")
        return []
    active = {name: s_.active_jobs for name, s_ in st.stages.items() if s_.active_jobs}
    check_dependencies(plan, todo, states, active)
    chunk = run.meta.get("chunk_size") or prep.chunk_size
    if bad := health.exclude_bad_nodes(plan, run.path):
        echo(f"  excluding the node(s) a health check found bad: {','.join(bad)}")
    requests = build_requests(plan, todo, chunk, active_parents=active)
    batch = f"r{len({r.get('batch') for r in run.ledger()})}"
    write_stage_files(plan, run.path, run.id, requests, tag=batch)
    for name, tasks in todo.items():
        if tasks:
            echo(f"  {name}: resubmitting {len(tasks)} task(s) {_short(tasks)}")
    ids = submit_all(run, plan, backend, requests, batch=batch, active=active, echo=echo)
    if run.submission_failed:  # its launch had rolled back; now it has jobs: a run again
        (run.path / SUBMISSION_FAILED).unlink(missing_ok=True)
    return ids


def _configs_now(run: Run, old: Plan) -> List[dict]:
    """The configs a resume plans with: the conf tree as it is now, for the points recorded (shuffle()
    orders them anew on every expansion, Hydra's basic sweeper, and a point's array index must stay the
    one its markers were written under); for a run whose configs were composed elsewhere (run.json
    `origin`: the Hydra launcher plugin), the configs it recorded."""
    meta = run.meta
    if meta.get("origin"):
        return point_configs.read_all(run.path)[:len(old.points)]
    # the config directories the run was composed with, whatever --config-dir/$LAUNCHER_CONFIG_DIRS say now
    configdirs.use(configdirs.checked(meta.get("config_dirs") or [], f"recorded in {run.path / 'run.json'}"))
    points = sweep_points(meta["overrides"], meta["multirun"])
    if sorted(points) != sorted(old.points):
        raise LauncherError(f"the sweep of run {run.id} no longer expands to the same points")
    return compose_each(old.points)


def with_servers(plan, todo: Dict[str, List[int]], states: Dict[str, Dict[int, str]]) -> Dict[str, List[int]]:
    """A client resubmitted after its server stopped needs the server again: the server's (a kind that
    provides_endpoint) completed tasks of the same sweep points go back into the queue too (a server
    task reruns whatever its marker says: Kind.reruns_when_complete; jobs.task)."""
    from launcher import kinds

    out = {k: list(v) for k, v in todo.items()}
    for name, tasks in todo.items():
        for d in plan.stages[name].deps:
            server = plan.stages[d.parent]
            if not kinds.get(server.kind).provides_endpoint or d.kind != "after" or not tasks:
                continue
            points = {plan.stages[name].split(t)[0] for t in tasks}
            again = [t for t, s in states.get(server.name, {}).items() if s == "completed" and server.split(t)[0] in points]
            out[server.name] = sorted(set(out.get(server.name, [])) | set(again))
    return out


def holds(kind: str, parent_states: List[str]) -> bool:
    """Whether a Slurm dependency of this kind is satisfied by parent tasks in these (final) states
    (sbatch(1), --dependency): what resume relies on when it submits a task without that edge."""
    if kind in ("afterok", "aftercorr"):
        return all(s in ("completed", "cached") for s in parent_states)
    if kind == "afternotok":
        return any(s in ("failed", "cancelled", "lost") for s in parent_states)
    if kind == "afterany":
        return all(s not in ACTIVE and s != "missing" for s in parent_states)
    return True  # after: the parent has begun (or ended)


def check_dependencies(plan: Plan, todo: Dict[str, List[int]], states: Dict[str, Dict[int, str]],
                       active: Dict[str, list]) -> None:
    """Resume submits a task without a dependency edge when the parent has nothing queued or being
    resubmitted: that is right only if the edge already holds. LauncherError (nothing submitted) for a
    task whose edge does not, rather than running it without its condition."""
    for name, tasks in todo.items():
        for d in plan.stages[name].deps if tasks else ():
            if todo.get(d.parent) or active.get(d.parent):
                continue  # the edge is passed to sbatch
            for t in tasks:
                parents = [states[d.parent][p] for p in parent_tasks(plan, name, d.kind, d.parent, t)]
                if not holds(d.kind, parents):
                    from collections import Counter

                    seen = ", ".join(f"{n} {s}" for s, n in sorted(Counter(parents).items()))
                    raise LauncherError(
                        f"cannot resume stage '{name}' (task {t}): it waits on '{d.parent}' with {d.kind}, which "
                        f"the parent's tasks ({seen}) do not satisfy, and no job of '{d.parent}' is queued or being "
                        f"resubmitted, so sbatch could only get it without that dependency and it would run "
                        f"unconditionally. Nothing was submitted.")


def cancel(run: Run, echo: Callable = print) -> List[str]:
    with run.locked():
        backend = run_backend(run)
        st = collect(run, backend, strict=True)  # scancel of a job Slurm does not know would fail
        ids = sorted({jid for s in st.stages.values() for jid, _ in s.active_jobs})
        if ids:
            backend.cancel(ids)
        echo(f"cancelled {len(ids)} job(s)" + (f": {', '.join(ids)}" if ids else " (nothing was queued or running)"))
        return ids


def _short(tasks: List[int]) -> str:
    from launcher.sbatch.arrays import ranges

    s = ranges(tasks)
    return f"[{s}]" if len(s) < 60 else f"[{s[:57]}...]"
