"""Checks against the live cluster, before anything is submitted. Each error names stage and key.

Here: what every backend shares (the run root, secrets, each stage's environment and targets, the hub
cache, each kind's own preflight). What a scheduler would refuse in a stage's
request is the backend's (Backend.check_stage, check_limits, check_external: launcher/slurm/checks.py,
launcher/local/checks.py), called through the protocol."""
from __future__ import annotations

import functools
import getpass
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, List, Optional

from launcher import backends, kinds
from launcher.slurm import containers
from launcher.plan import snapshot, team_cache, tracking
from jobs.adapters import hub_refs
from launcher.config.environments import build_state, interpreter_problems
from launcher.errors import ConfigError
from launcher.plan.shell import bash_syntax_error
from launcher.plan.model import Plan, StagePlan

if TYPE_CHECKING:  # the types of the Slurm backend's checks (Backend.checks), named in the signature only
    from launcher.slurm import limits as slurm_limits
    from launcher.slurm.facts import ClusterInfo, Reservation


def check_common(plan: Plan, run_root: Path) -> List[ConfigError]:
    """What preflight checks whatever the backend: the run root, the environments, secrets, setup lines,
    the hub cache, the team cache and each kind's own preflight. It reads the plan as build_plan made it
    (not its content keys or cached points: it may run beside keys.assign and cache.apply)."""
    errors: List[ConfigError] = []
    cl = plan.cluster
    try:
        run_root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=run_root, prefix=".write-test-"):
            pass
    except OSError as e:
        errors.append(ConfigError(f"run root {run_root} is not writable: {e.strerror or e}", key="run_root"))
    errors += check_environments(plan, run_root)
    if cl.get("secrets_file"):
        path = cl["secrets_file"]
        if not os.path.isfile(path):
            errors.append(ConfigError(f"secrets file {path} does not exist", key="cluster.secrets_file"))
        elif os.stat(path).st_mode & 0o077:
            errors.append(ConfigError(f"secrets file {path} is readable by others (chmod 600 it)",
                                      key="cluster.secrets_file"))
    for i, name in enumerate(cl.get("secrets") or []):
        if not os.environ.get(name):
            errors.append(ConfigError(f"secret {name} is not set in this shell; tasks get it from here, by name",
                                      key=f"cluster.secrets.{i}"))
    # A secret's value anywhere in the config is refused earlier, before anything is written
    # (launcher/plan/secrets.py, from ops.prepare).
    if cl.get("setup") and (msg := bash_syntax_error("\n".join(cl["setup"]))):
        errors.append(ConfigError(f"setup lines are not valid bash: {msg}", key="cluster.setup"))
    check_hub_cache(plan, errors)
    errors += team_cache.problems(cl)
    for stage in plan.stages.values():
        errors += kinds.get(stage.kind).preflight(plan, stage)
    return _unique(errors)


def check_hub_cache(plan: Plan, errors: List[ConfigError]) -> None:
    """Each hub repo a stage names (hf://...) is downloaded by a stage of the plan (a kind that
    downloads_hub_refs: fetch) or already in the cluster's hub cache."""
    cl = plan.cluster
    fetched = {r for s in plan.stages.values() for r in kinds.get(s.kind).fetched_refs(s)}
    for s in plan.stages.values():
        if kinds.get(s.kind).downloads_hub_refs:
            continue
        for payload in {id(p): p for p in s.payloads}.values():  # one object where points share it
            for key, value in _strings(payload, f"pipeline.stages.{s.name}"):
                ref = hub_refs.parse(value)
                if ref is None or ref in fetched:
                    continue
                if not cl.get("hub_cache"):
                    errors.append(ConfigError(f"{value} names a hub repo, but the cluster profile sets no hub_cache "
                                              f"(the shared folder compute nodes read it from)", stage=s.name, key=key))
                elif hub_refs.snapshot(cl["hub_cache"], ref) is None:
                    errors.append(ConfigError(f"{ref.repo_id} ({ref}) is not in the hub cache {cl['hub_cache']} and no "
                                              f"fetch stage downloads it (cluster.hub_fetch is "
                                              f"{cl.get('hub_fetch')}; `auto` adds one)", stage=s.name, key=key))


def _strings(node, key: str):
    if isinstance(node, str):
        yield key, node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from _strings(v, f"{key}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _strings(v, f"{key}.{i}")


def _unique(errors: List[ConfigError]) -> List[ConfigError]:
    """Sweep points that share a value find the same problem: once."""
    seen = set()
    return [e for e in errors if not ((e.stage, e.key, e.message) in seen or seen.add((e.stage, e.key, e.message)))]


def check_environments(plan: Plan, run_root: Optional[Path] = None) -> List[ConfigError]:
    """Each stage's interpreter starts, imports its environment's modules and finds every target the
    stage names (a python stage's function, the datatrove blocks of a preprocess stage), one process
    per distinct environment, in parallel; its container image exists, its container mounts leave the
    run directory visible, its setup lines parse. An interpreter inside a container image is not
    started here (the login node does not run the image)."""
    errors: List[ConfigError] = []
    by_env: dict = {}
    for stage in plan.stages.values():
        env = stage.environment
        if not (env["container_image"] and not containers.host_interpreter_paths(plan.cluster, env)):
            by_env.setdefault((env["python"], tuple(env["imports"])), []).append(stage.name)
        where = (f"cluster.environments.{env['name']}" if env["name"] else "cluster")
        image = env["container_image"]
        if image and not backends.get(plan.cluster["backend"]).runs_containers:
            errors.append(ConfigError("container images need Slurm with pyxis; cluster=local runs none",
                                      stage=stage.name, key=f"{where}.container_image"))
        elif image and (image.startswith(("/", ".")) or image.endswith(".sqsh")) and not os.path.exists(image):
            errors.append(ConfigError(f"container image {image} does not exist", stage=stage.name,
                                      key=f"{where}.container_image"))
        if image:
            for i, msg in containers.mount_problems(env, run_root):
                errors.append(ConfigError(msg, stage=stage.name, key=f"{where}.container_mounts.{i}"))
        if env["setup"] and (msg := bash_syntax_error("\n".join(env["setup"]))):
            errors.append(ConfigError(f"setup lines are not valid bash: {msg}", stage=stage.name, key=f"{where}.setup"))
    keys = list(by_env)
    wanted = {k: [(name, key, t) for name in by_env[k] for key, t in stage_targets(plan.stages[name])] for k in keys}

    # Imported from a view of the snapshot the run would take now, from its folder: what a task can
    # import, and nothing else (not the submission directory, not the code paths' siblings).
    with snapshot.view(plan.code, exclude=[run_root] if run_root else []) as view:
        path = [str(p) for p in snapshot.pythonpath_of(view, plan.code)]

        def check(k):
            return interpreter_problems(k[0], k[1], sorted({t for _, _, t in wanted[k]}), path)

        with ThreadPoolExecutor(max_workers=min(8, len(keys) or 1)) as pool:
            problems = list(pool.map(check, keys))
    for k, found in zip(keys, problems):
        for name in by_env[k]:
            env = plan.stages[name].environment
            where = f"cluster.environments.{env['name']}" if env["name"] else "cluster"
            built = (plan.cluster.get("environments") or {}).get(env["name"] or "", {}).get("build")
            hint = ""
            if built and build_state(plan.cluster, env["name"]) != "built":
                hint = (f" (environment '{env['name']}' is {build_state(plan.cluster, env['name'])}: `launcher env build "
                        f"{env['name']} --cluster {plan.cluster['name']}` makes it from {built}.txt in conf/envs/ or a config directory's envs/; "
                        f"`scripts/setup --envs` builds every one)")
            for what, why in found.items():
                why += hint
                if what in k[1] or what == "":
                    errors.append(ConfigError(why, stage=name, key=f"{where}.python"))
        for name, key, target in wanted[k]:
            if target in found and target not in k[1]:
                env = plan.stages[name].environment
                why = (f"tracking.backend={plan.stages[name].tracking['backend']} needs its package in the stage's "
                       f"environment (conf/envs/<env>.txt; docs/tracking.md): " if key.endswith(".tracking.backend")
                       else "")
                errors.append(ConfigError(f"{why}{target} not found in environment '{env['name'] or 'default'}' "
                                          f"({env['python']}): {found[target]}", stage=name, key=key))
    return errors


def stage_targets(stage: StagePlan) -> List[tuple]:
    """(config key, target) a stage's tasks will resolve (Kind.targets: a python stage's function, the
    datatrove blocks of a preprocess stage, a trainer's classes...)."""
    return list(dict.fromkeys(kinds.get(stage.kind).targets(stage) + tracking.target(stage.name, stage.tracking)))


def preflight(plan: Plan, run_root: Path, info: Optional[ClusterInfo],
              associations: Optional[Callable[[str], tuple]] = None,
              srun_help: Optional[Callable[[], str]] = None,
              reservations: Optional[Callable[[], Dict[str, Reservation]]] = None,
              limits: Optional[Callable[[str], slurm_limits.AccountingLimits]] = None,
              queued: Optional[Callable[[str], List[slurm_limits.QueuedJob]]] = None,
              warnings: Optional[List[str]] = None,
              backend: Optional[backends.Backend] = None,
              common: Optional[Callable[[], List[ConfigError]]] = None) -> List[ConfigError]:
    """All problems found; empty means submit. `info` (Facts.info) is None for the local backend.
    `srun_help` returns `srun --help` (called at most once, and only when a stage names a container
    image); `reservations` the cluster's reservations (called at most once, only when a stage names
    one); `limits` the QOS and association limits of a user (launcher/slurm/limits.py; None without
    accounting); `queued` the user's queued jobs (called at most once, only when a submit limit may be
    reached). What only delays the run (a limit on jobs running at once) is appended to `warnings`.
    `backend` checks the run, each stage's request and the run's limits (Backend.check_run, check_stage,
    check_limits);
    by default the class cluster.backend names (launcher/backends.py). `common` returns check_common's
    answer when the caller runs it beside the rest (launcher/run/ops.py prepare_configs)."""
    backend = backend or backends.get(plan.cluster["backend"])
    errors = list(common()) if common is not None else check_common(plan, run_root)
    errors += backend.check_run(plan, info, srun_help, associations, getpass.getuser())
    # Asked the first time a stage names a reservation, not again (one scontrol call a run).
    held = functools.lru_cache(maxsize=None)(reservations) if reservations else None
    for stage in (view for s in plan.stages.values() for view in s.group_views()):
        errors += backend.check_stage(stage, plan.cluster, info, held, getpass.getuser())
    if info and limits:
        found, notes = backend.check_limits(plan, info, limits(getpass.getuser()),
                                            queued and (lambda: queued(getpass.getuser())))
        errors += found
        if warnings is not None:
            warnings += notes
    return errors
