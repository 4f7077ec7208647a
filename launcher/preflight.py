"""Checks against the live cluster, before anything is submitted. Each error names stage and key."""
from __future__ import annotations

import getpass
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Dict, List, Optional

from launcher import backends, containers, kinds, snapshot, tracking
from launcher.sbatch import options as sbatch_options
from launcher.slurm import limits as slurm_limits
from jobs.adapters import hub_refs
from launcher.environments import build_state, interpreter_problems
from launcher.errors import ConfigError
from launcher.shell import bash_syntax_error
from launcher.plan import Plan, StagePlan
from launcher.slurm.facts import ClusterInfo, Partition, Reservation, expand_hostlist
from launcher.sbatch.values import constraint_problem, mem_mb


def _key(stage: StagePlan, k: str) -> str:
    return f"pipeline.stages.{stage.name}.resources.{k}"


def check_slurm_stage(stage: StagePlan, cluster: dict, info: ClusterInfo,
                      reservations: Optional[Dict[str, Reservation]] = None, user: str = "") -> List[ConfigError]:
    """What Slurm would refuse or never start in this stage's request, checked against the nodes of its
    partition(s): a partition list ("a,b", as sbatch takes it) needs one partition that can run the job.
    `reservations` (Slurm.reservations) is given when some stage names one."""
    errors: List[ConfigError] = []
    r = stage.resources

    def bad(k: str, msg: str) -> None:
        errors.append(ConfigError(msg, stage=stage.name, key=_key(stage, k)))

    spec = r["partition"] or cluster.get("partition") or info.default_partition
    if spec is None:
        bad("partition", "no partition given and the cluster has no default partition")
        return errors
    names = [n.strip() for n in str(spec).split(",")]
    unknown = [n for n in names if n not in info.partitions]
    if unknown:
        msg = (f"partition '{unknown[0]}' does not exist (partitions: {', '.join(sorted(info.partitions))})"
               if len(unknown) == 1 else f"partitions {', '.join(unknown)} do not exist "
                                         f"(partitions: {', '.join(sorted(info.partitions))})")
        if r["partition"]:
            bad("partition", msg)
        else:
            errors.append(ConfigError(msg, stage=stage.name, key="cluster.partition"))
        return errors
    known = {n.name: n for p in info.partitions.values() for n in p.nodes}
    for k in ("nodelist", "exclude"):
        missing = [h for h in expand_hostlist(r.get(k) or "") if h not in known]
        if missing:
            bad(k, f"no node named {', '.join(missing)} in the cluster (nodes: {_hosts(known)})")
    if r.get("nodelist") and len(expand_hostlist(r["nodelist"])) > r["nodes"]:
        bad("nodelist", f"{len(expand_hostlist(r['nodelist']))} nodes listed but the stage asks for "
                        f"{r['nodes']} (resources.nodes): sbatch needs nodes >= the list")
    reservation = None
    if r.get("reservation"):
        reservation = (reservations or {}).get(r["reservation"])
        if reservation is None:
            bad("reservation", f"no reservation '{r['reservation']}' (reservations: "
                               f"{', '.join(sorted(reservations or {})) or 'none'}; scontrol show reservation)")
        elif (why := _reservation_refuses(reservation, user, r["account"] or cluster.get("account"))):
            bad("reservation", why)
    # The rest is checked too, with what is known to be right (all problems are listed at once):
    # listed nodes that exist, no reservation if it is not there or not yours.
    if r.get("nodelist"):
        r = {**r, "nodelist": ",".join(h for h in expand_hostlist(r["nodelist"]) if h in known)}
    reservation = reservation if not any(e.key.endswith(".reservation") for e in errors) else None
    found = [(n, _partition_problems(stage, info.partitions[n], r, reservation)) for n in names]
    if any(not problems for _, problems in found):
        return errors
    if len(found) == 1:
        for k, msg in found[0][1]:
            bad(k, msg)
    else:  # one partition that fits is enough for sbatch; say why each does not
        k = found[0][1][0][0]
        bad(k, f"no partition of '{spec}' can run it: " + "; ".join(f"{p[0][1]}" for _, p in found))
    return errors


def _hosts(known: dict) -> str:
    names = sorted(known)
    return ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")


def _reservation_refuses(res: Reservation, user: str, account: Optional[str]) -> Optional[str]:
    """Why `user` (submitting with `account`) may not use reservation `res` (None if they may).
    Users=/Accounts= entries may be negated with '-' (scontrol(1), reservation Users)."""
    users, accounts = res.users, res.accounts
    if any(u == f"-{user}" for u in users) or (account and any(a == f"-{account}" for a in accounts)):
        return f"reservation '{res.name}' excludes you ({user}{'/' + account if account else ''})"
    allowed_users = [u for u in users if not u.startswith("-")]
    allowed_accounts = [a for a in accounts if not a.startswith("-")]
    if not allowed_users and not allowed_accounts:
        return None
    if user in allowed_users or (account and account in allowed_accounts):
        return None
    return (f"reservation '{res.name}' is for users {', '.join(allowed_users) or '-'} and accounts "
            f"{', '.join(allowed_accounts) or '-'}; you are {user}"
            + (f" with account {account}" if account else " with no account"))


def _partition_problems(stage: StagePlan, part: Partition, r: dict,
                        reservation: Optional[Reservation]) -> List[tuple]:
    """(resources key, message) for each reason partition `part` cannot run this stage's job; the
    first shortage of a node property is the news, the ones after it would only repeat it."""
    out: List[tuple] = []
    name = part.name
    if part.max_time_min is not None and stage.time_min is None:
        out.append(("time", f"{r['time']} (no limit) is over partition '{name}' MaxTime ({part.max_time_min} min); "
                            f"the job would pend forever (PartitionTimeLimit)"))
    elif part.max_time_min is not None and stage.time_min > part.max_time_min:
        out.append(("time", f"{r['time']} ({stage.time_min} min) is over partition '{name}' MaxTime "
                            f"({part.max_time_min} min)"))
    if r["nodes"] > len(part.nodes) or (part.max_nodes is not None and r["nodes"] > part.max_nodes):
        out.append(("nodes", f"{r['nodes']} node(s) requested, partition '{name}' has {len(part.nodes)}"
                             + (f" (MaxNodes={part.max_nodes})" if part.max_nodes is not None else "")))
    fits, among = list(part.nodes), ""
    listed = set(expand_hostlist(r.get("nodelist") or ""))
    if listed and (outside := sorted(listed - {n.name for n in fits})):
        out.append(("nodelist", f"{', '.join(outside)} not in partition '{name}' (its nodes: "
                                f"{_hosts({n.name: n for n in fits})})"))
        return out
    excluded = set(expand_hostlist(r.get("exclude") or ""))
    if excluded:
        fits, among = [n for n in fits if n.name not in excluded], " outside the excluded nodes"
        if len(fits) < r["nodes"]:
            out.append(("exclude", f"{r['exclude']} leaves {len(fits)} node(s) of partition '{name}', the stage "
                                   f"asks for {r['nodes']}"))
            return out
    if reservation is not None:
        held = set(reservation.nodes)
        fits, among = [n for n in fits if n.name in held], f" in reservation '{reservation.name}'"
        if len(fits) < r["nodes"]:
            out.append(("reservation", f"reservation '{reservation.name}' holds {len(fits)} node(s) of partition "
                                       f"'{name}' ({reservation.node_spec or 'none'}), the stage asks for {r['nodes']}"))
            return out
    if r["constraint"]:  # the nodes with the features asked for; sbatch fails on a feature no node has
        why, names = constraint_problem(r["constraint"], [(n.name, set(n.features)) for n in fits],
                                        r["nodes"], name)
        if why:
            out.append(("constraint", why))
            return out
        if names is not None:
            fits, among = [n for n in fits if n.name in names], f" with features {r['constraint']}"
    for k, wanted in _gres_wanted(r):
        typed = [n for n in fits if _gres_count(n, *wanted[:2]) >= wanted[2]]
        if not typed:
            gname, gtype, count = wanted
            types = sorted({t for n in fits for t in n.gres.get(gname, {}) if t})
            what = f"{count} x {gname}" + (f" of type '{gtype}'" if gtype else "")
            out.append((k, f"{what} per node requested, but no node in partition '{name}'{among} has that "
                           f"(its {gname} types: {', '.join(types) or 'untyped or none'})"))
            return out
        fits = typed
    cpus = r["cpus_per_task"] * r["ntasks_per_node"]
    gpus = r["gpus_per_node"] or sum(c for _, (g, _, c) in _gres_wanted(r) if g == "gpu")
    mem_need = (mem_mb(r["mem_gb"]) if r["mem_gb"] else 0) or \
        (mem_mb(r.get("mem_per_cpu_gb")) * cpus if r.get("mem_per_cpu_gb") else 0) or \
        (mem_mb(r.get("mem_per_gpu_gb")) * gpus if r.get("mem_per_gpu_gb") and gpus else 0)
    mem_key = next((k for k in ("mem_gb", "mem_per_cpu_gb", "mem_per_gpu_gb") if r.get(k)), "mem_gb")
    eligible = fits
    for k, need, have in (
        ("gpus_per_node", r["gpus_per_node"], lambda n: n.gpus),
        ("cpus_per_task", cpus, lambda n: n.cpus),
        (mem_key, mem_need, lambda n: n.mem_mb),  # the MB the rendered --mem/--mem-per-* add up to
    ):
        if need and not any(have(n) >= need for n in fits):
            best = max((have(n) for n in eligible), default=0)
            unit = f"{best / 1024:.1f} GB" if k.startswith("mem") else str(best)
            what = {"gpus_per_node": f"{need} GPUs per node", "mem_gb": f"{r['mem_gb']} GB of memory",
                    "mem_per_cpu_gb": f"{need / 1024:.1f} GB of memory ({r.get('mem_per_cpu_gb')} GB x {cpus} CPUs)",
                    "mem_per_gpu_gb": f"{need / 1024:.1f} GB of memory ({r.get('mem_per_gpu_gb')} GB x {gpus} GPUs)",
                    "cpus_per_task": f"{need} CPUs per node (cpus_per_task x ntasks_per_node)"}[k]
            out.append((k, f"{what} requested, but no node in partition '{name}'{among} has that much "
                           f"(largest: {unit})"))
            break
        fits = [n for n in fits if have(n) >= need]
    return out


def _gres_wanted(r: dict) -> List[tuple]:
    """(resources key, (gres name, type or None, count per node)) for each typed GRES request."""
    out = []
    if r.get("gpu_type"):
        out.append(("gpus_per_node", ("gpu", r["gpu_type"], r["gpus_per_node"])))
    if r.get("gres"):
        out += [("gres", item) for item in sbatch_options.parse_gres(r["gres"])]
    return out


def _gres_count(node, gname: str, gtype: Optional[str]) -> int:
    have = node.gres.get(gname, {})
    return have.get(gtype, 0) if gtype else sum(have.values())


def check_local_stage(stage: StagePlan, cluster: dict) -> List[ConfigError]:
    errors: List[ConfigError] = []
    r = stage.resources
    if r["nodes"] > 1:
        errors.append(ConfigError(f"{r['nodes']} nodes requested; cluster=local is one machine",
                                  stage=stage.name, key=_key(stage, "nodes")))
    if r["gpus_per_node"] > cluster.get("gpus_per_node", 0):
        errors.append(ConfigError(f"{r['gpus_per_node']} GPUs requested; cluster=local offers "
                                  f"{cluster.get('gpus_per_node', 0)} (cluster.gpus_per_node)",
                                  stage=stage.name, key=_key(stage, "gpus_per_node")))
    return errors


def check_common(plan: Plan, run_root: Path) -> List[ConfigError]:
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
    # (launcher/secrets.py, from ops.prepare).
    if cl.get("setup") and (msg := bash_syntax_error("\n".join(cl["setup"]))):
        errors.append(ConfigError(f"setup lines are not valid bash: {msg}", key="cluster.setup"))
    check_hub_cache(plan, errors)
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
        for payload in s.payloads:
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
              warnings: Optional[List[str]] = None) -> List[ConfigError]:
    """All problems found; empty means submit. `info` is None for the local backend. `srun_help`
    returns `srun --help` (called at most once, and only when a stage names a container image);
    `reservations` the cluster's reservations (called at most once, only when a stage names one);
    `limits` the QOS and association limits of a user (launcher/slurm/limits.py; None without
    accounting); `queued` the user's queued jobs (called at most once, only when a submit limit may be
    reached). What only delays the run (a limit on jobs running at once) is appended to `warnings`."""
    errors = check_common(plan, run_root)
    in_image = [s for s in plan.stages.values() if s.environment.get("container_image")]
    if info and srun_help and in_image:
        problem = containers.pyxis_problem(srun_help())
        if problem:
            for stage in in_image:
                name = stage.environment["name"]
                where = f"cluster.environments.{name}" if name else "cluster"
                errors.append(ConfigError(problem, stage=stage.name, key=f"{where}.container_image"))
    mine = plan.cluster.get("max_array_size")
    big = [s.name for s in plan.stages.values() if info and s.total_tasks > info.max_array_size]
    if info and mine and mine > info.max_array_size and big:  # sbatch refuses array indices >= MaxArraySize
        errors.append(ConfigError(f"{mine} is over the cluster's MaxArraySize ({info.max_array_size}): sbatch would "
                                  f"refuse the arrays it cuts {', '.join(big)} into", key="cluster.max_array_size"))
    total = sum(s.total_tasks for s in plan.stages.values())
    if info and info.max_job_count and total > info.max_job_count:
        big = max(plan.stages.values(), key=lambda s: s.total_tasks)
        errors.append(ConfigError(f"the run has {total} array tasks; slurmctld holds at most MaxJobCount="
                                  f"{info.max_job_count} jobs, so it could never be queued whole",
                                  stage=big.name, key=f"pipeline.stages.{big.name}.tasks"))
    held = reservations() if info and reservations and any(v.resources.get("reservation") for s in plan.stages.values()
                                                             for v in s.group_views()) else {}
    for stage in (view for s in plan.stages.values() for view in s.group_views()):
        errors += (check_slurm_stage(stage, plan.cluster, info, held, getpass.getuser()) if info
                   else check_local_stage(stage, plan.cluster))
    if info and limits:
        found, notes = check_limits(plan, info, limits(getpass.getuser()),
                                    queued and (lambda: queued(getpass.getuser())))
        errors += found
        if warnings is not None:
            warnings += notes
    if info and associations:
        wanted = {(s.name, k, s.resources[k] or plan.cluster.get(k)) for s in plan.stages.values()
                  for k in ("account", "qos")}
        if any(v for _, _, v in wanted):
            accounts, qos = associations(getpass.getuser())
            for stage, k, v in sorted(wanted, key=str):
                if v and v not in (accounts if k == "account" else qos):
                    have = accounts if k == "account" else qos
                    errors.append(ConfigError(f"{k} '{v}' is not available to {getpass.getuser()} "
                                              f"(yours: {', '.join(sorted(have)) or 'none'})",
                                              stage=stage, key=_key_for(plan, stage, k)))
    return errors


def check_limits(plan: Plan, info: ClusterInfo, limits: slurm_limits.AccountingLimits,
                 queued: Optional[Callable[[], List[slurm_limits.QueuedJob]]] = None) -> tuple[List[ConfigError], List[str]]:
    """Each stage's array task against the QOS and association limits it is held to (the partition's
    QOS, the job's, the association: slurm_limits.applicable). Then each limit on jobs once for the run:
    the tasks of every stage held to it against a submit limit (with the user's jobs already queued,
    from `queued`, called at most once and only when the run alone fits), an error under the biggest of
    those stages; against a running-jobs limit, a warning. Returns (errors, warnings)."""
    errors: List[ConfigError] = []
    counted: Dict[str, tuple] = {}  # limit source -> (Limits, [(stage, tasks, tasks at once)])
    for stage in plan.stages.values():
        for g, view in enumerate(stage.group_views()):
            r = view.resources
            partition = (r["partition"] or plan.cluster.get("partition") or info.default_partition or "").split(",")[0]
            part = info.partitions.get(partition)
            held = slurm_limits.applicable(limits, r["account"] or plan.cluster.get("account"), partition,
                                           r["qos"] or plan.cluster.get("qos"), part.qos if part else None)
            for k, msg in slurm_limits.limit_problems(slurm_limits.job_tres(r), view.time_min, held):
                errors.append(ConfigError(msg, stage=stage.name, key=_key(view, k)))
            tasks = stage.tasks_per_point * (stage.groups.count(g) if stage.groups else stage.points)
            for lim in held:  # the limits a level above hides for one stage it may not for another
                kept, rows = counted.get(lim.source, (lim, []))
                counted[lim.source] = (lim if _caps(lim) > _caps(kept) else kept,
                                       rows + [(stage.name, tasks, min(tasks, stage.throttle or tasks))])
    return _unique(errors) + _submit_problems(counted, queued), _running_warnings(counted)


def _caps(lim: slurm_limits.Limits) -> int:
    return sum(c is not None for c in (lim.max_submit, lim.grp_submit, lim.max_jobs, lim.grp_jobs))


def _submit_problems(counted: Dict[str, tuple], queued) -> List[ConfigError]:
    errors, mine = [], None
    for lim, stages in counted.values():
        caps = [c for c in (lim.max_submit, lim.grp_submit) if c is not None]
        total = sum(n for _, n, _ in stages)
        if not caps:
            continue
        why = slurm_limits.submit_problem(lim, total, None)
        if why is None and queued is not None:  # the run alone fits: the jobs already queued may not leave room
            mine = queued() if mine is None else mine
            why = slurm_limits.submit_problem(lim, total, mine)
        if why:
            biggest = max(stages, key=lambda s: s[1])[0]
            errors.append(ConfigError(why, stage=biggest, key=f"pipeline.stages.{biggest}.tasks"))
    return errors


def _running_warnings(counted: Dict[str, tuple]) -> List[str]:
    at_once: Dict[str, Dict[str, int]] = {}
    for source, (_, stages) in counted.items():
        for name, _, n in stages:  # a stage cut by resource group: its groups may run together
            at_once.setdefault(source, {})[name] = at_once.get(source, {}).get(name, 0) + n
    return [w for source, (lim, _) in counted.items()
            if (w := slurm_limits.running_warning(lim, list(at_once[source].items())))]


def _key_for(plan: Plan, stage: str, k: str) -> str:
    return f"pipeline.stages.{stage}.resources.{k}" if plan.stages[stage].resources[k] else f"cluster.{k}"


def external_problems(plan: Plan, states: Dict[str, tuple]) -> tuple[List[ConfigError], List[tuple]]:
    """Jobs outside the run that stages wait on (after: {job:N: kind}), against what Slurm says of them
    (Slurm.job_states: {id: (STATE words, held by slurmctld)}). Problems: a job Slurm does not know
    (sbatch would refuse the dependency), or one whose state means the edge can never hold (the stage
    would be cancelled at once: kill-on-invalid-dep). And the edges that hold already on a job that
    slurmctld no longer holds (ended longer than MinJobAge ago; sbatch would refuse to name it):
    [(stage, job id, why)], submitted without that dependency."""
    from launcher.slurm.accounting import STATE_MAP

    errors, met = [], []
    for name, stage in plan.stages.items():
        for job, kind in stage.external.items():
            key = f"pipeline.stages.{name}.after.job:{job}"
            if job not in states:
                errors.append(ConfigError(f"no Slurm job {job}: neither squeue nor sacct knows it, and sbatch would "
                                          f"refuse a dependency on it", stage=name, key=key))
                continue
            words, held = states[job]
            seen = [STATE_MAP.get(w, "pending") for w in words]
            ended = all(s in ("completed", "failed", "cancelled") for s in seen)
            bad = any(s in ("failed", "cancelled") for s in seen)
            holds = {"afterok": ended and not bad, "afterany": ended, "afternotok": ended and bad,
                     "after": any(s != "pending" for s in seen)}[kind]
            never = (kind == "afterok" and bad) or (kind == "afternotok" and ended and not bad)
            state = "/".join(sorted(set(words)))
            if never:
                errors.append(ConfigError(f"job {job} is {state}: {kind} can never hold, so Slurm would cancel the "
                                          f"stage at once", stage=name, key=key))
            elif not held and holds:
                met.append((name, job, f"job {job} ended {state} and slurmctld no longer holds it: {kind} holds"))
            elif not held:
                errors.append(ConfigError(f"slurmctld no longer holds job {job} (sacct: {state}), so sbatch would "
                                          f"refuse a dependency on it", stage=name, key=key))
    return errors, met
