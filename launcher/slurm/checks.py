"""What Slurm would refuse, or accept and never start, in a run's requests: each stage (one resource
group at a time) against the nodes, partitions and reservations of the cluster (facts.py), and the
run against the QOS and association limits it is held to (limits.py), and against what the cluster
holds at all (check_run: pyxis for container images, MaxArraySize, MaxJobCount, your accounts and QOS).
The Slurm backend's check_run, check_stage, check_limits and check_external (backend.py; launcher/plan/preflight.py calls them through the Backend
protocol). Each error names the stage and its key (pipeline.stages.<name>.resources.<key>, or
cluster.partition / pipeline.stages.<name>.tasks).

Pure functions of the facts given. The stage and the plan are duck-typed (this layer is below
launcher.plan, which it may not import): a stage is a launcher.backends.StageRequest (name,
resources, time_min); check_limits reads the plan's `cluster` and `stages`, and of each stage
group_views(), tasks_per_point, groups, points and throttle (launcher.plan.model.StagePlan)."""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

from launcher.slurm import containers
from launcher.backends import StageRequest
from launcher.errors import ConfigError
from launcher.sbatch import options as sbatch_options
from launcher.sbatch.values import constraint_problem, mem_mb
from launcher.slurm import limits as slurm_limits
from launcher.slurm.accounting import STATE_MAP
from launcher.slurm.facts import ClusterInfo, Partition, Reservation, expand_hostlist


def _key(stage: StageRequest, k: str) -> str:
    return f"pipeline.stages.{stage.name}.resources.{k}"


def check_stage(stage: StageRequest, cluster: dict, info: Optional[ClusterInfo],
                reservations: Optional[Callable[[], Dict[str, Reservation]]] = None,
                user: str = "") -> List[ConfigError]:
    """What Slurm would refuse or never start in this stage's request (one resource group: a
    StageRequest), checked against the nodes of its partition(s): a partition list ("a,b", as sbatch
    takes it) needs one partition that can run the job. `cluster`: the profile (its partition and
    account are the stage's defaults). `reservations` returns the cluster's reservations
    (Slurm.reservations), called only when the stage names one (the caller makes it answer once per
    run); `user` is who submits (a reservation's Users=). Without cluster facts (`info` None: nothing
    was asked, as in a test's plan) there is nothing to check against: []."""
    errors: List[ConfigError] = []
    if info is None:
        return errors
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
        held = reservations() if reservations else {}
        reservation = held.get(r["reservation"])
        if reservation is None:
            bad("reservation", f"no reservation '{r['reservation']}' (reservations: "
                               f"{', '.join(sorted(held)) or 'none'}; scontrol show reservation)")
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


def _partition_problems(stage: StageRequest, part: Partition, r: dict,
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
    gpus = sbatch_options.node_gpus(r)  # gpus_per_node, gres gpu or gpus_per_task x ntasks_per_node
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


def _unique(errors: List[ConfigError]) -> List[ConfigError]:
    """Sweep points that share a value find the same problem: once."""
    seen = set()
    return [e for e in errors if not ((e.stage, e.key, e.message) in seen or seen.add((e.stage, e.key, e.message)))]


def check_limits(plan: Any, info: ClusterInfo, limits: slurm_limits.AccountingLimits,
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




def check_run(plan: Any, info: Optional[ClusterInfo], srun_help: Optional[Callable[[], str]] = None,
              associations: Optional[Callable[[str], tuple]] = None, user: str = "") -> List[ConfigError]:
    """The whole run against what the cluster holds at all: pyxis for the stages that name a container
    image (`srun_help` returns `srun --help`, called only then), the profile's max_array_size against
    MaxArraySize (sbatch refuses array indices >= it), the run's array tasks against MaxJobCount
    (slurm.conf(5)), and every account and QOS a stage or the profile names against the user's
    associations (`associations(user)` -> (accounts, qos), called only when one is named). The plan is
    duck-typed: its `cluster` and `stages` (name, total_tasks, environment, resources). Without cluster
    facts (`info` None) there is nothing to check against: []."""
    errors: List[ConfigError] = []
    if info is None:
        return errors
    in_image = [s for s in plan.stages.values() if s.environment.get("container_image")]
    if srun_help and in_image:
        problem = containers.pyxis_problem(srun_help())
        if problem:
            for stage in in_image:
                name = stage.environment["name"]
                where = f"cluster.environments.{name}" if name else "cluster"
                errors.append(ConfigError(problem, stage=stage.name, key=f"{where}.container_image"))
    mine = plan.cluster.get("max_array_size")
    big = [s.name for s in plan.stages.values() if s.total_tasks > info.max_array_size]
    if mine and mine > info.max_array_size and big:  # sbatch refuses array indices >= MaxArraySize
        errors.append(ConfigError(f"{mine} is over the cluster's MaxArraySize ({info.max_array_size}): sbatch would "
                                  f"refuse the arrays it cuts {', '.join(big)} into", key="cluster.max_array_size"))
    total = sum(s.total_tasks for s in plan.stages.values())
    if info.max_job_count and total > info.max_job_count:
        most = max(plan.stages.values(), key=lambda s: s.total_tasks)
        errors.append(ConfigError(f"the run has {total} array tasks; slurmctld holds at most MaxJobCount="
                                  f"{info.max_job_count} jobs, so it could never be queued whole",
                                  stage=most.name, key=f"pipeline.stages.{most.name}.tasks"))
    return errors + check_associations(plan, associations, user)


def check_associations(plan: Any, associations: Optional[Callable[[str], tuple]], user: str) -> List[ConfigError]:
    """Every account and QOS a stage or the profile names, against the user's associations
    (`associations(user)` -> (accounts, qos), sacctmgr; called only when one is named)."""
    errors: List[ConfigError] = []
    if not associations:
        return errors
    wanted = {(s.name, k, s.resources[k] or plan.cluster.get(k)) for s in plan.stages.values() for k in ("account", "qos")}
    if not any(v for _, _, v in wanted):
        return errors
    accounts, qos = associations(user)
    for stage, k, v in sorted(wanted, key=str):
        have = accounts if k == "account" else qos
        if v and v not in have:
            key = f"pipeline.stages.{stage}.resources.{k}" if plan.stages[stage].resources[k] else f"cluster.{k}"
            errors.append(ConfigError(f"{k} '{v}' is not available to {user} (yours: {', '.join(sorted(have)) or 'none'})",
                                      stage=stage, key=key))
    return errors


def check_external(plan: Any, states: Dict[str, tuple]) -> tuple[List[ConfigError], List[tuple]]:
    """Jobs outside the run that stages wait on (after: {job:N: kind}), against what Slurm says of them
    (Slurm.job_states: {id: (STATE words, held by slurmctld)}; the backend asks them, backend.py). Problems: a job Slurm does not know
    (sbatch would refuse the dependency), or one whose state means the edge can never hold (the stage
    would be cancelled at once: kill-on-invalid-dep). And the edges that hold already on a job that
    slurmctld no longer holds (ended longer than MinJobAge ago; sbatch would refuse to name it):
    [(stage, job id, why)], submitted without that dependency."""
    errors, met = [], []
    for name, stage in plan.stages.items():
        for job, dep_type in stage.external.items():  # Slurm's dependency type: afterok, afterany...
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
                     "after": any(s != "pending" for s in seen)}[dep_type]
            never = {"afterok": bad, "afternotok": ended and not bad}.get(dep_type, False)
            state = "/".join(sorted(set(words)))
            if never:
                errors.append(ConfigError(f"job {job} is {state}: {dep_type} can never hold, so Slurm would cancel the "
                                          f"stage at once", stage=name, key=key))
            elif not held and holds:
                met.append((name, job, f"job {job} ended {state} and slurmctld no longer holds it: {dep_type} holds"))
            elif not held:
                errors.append(ConfigError(f"slurmctld no longer holds job {job} (sacct: {state}), so sbatch would "
                                          f"refuse a dependency on it", stage=name, key=key))
    return errors, met
