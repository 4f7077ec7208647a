"""Configs → plan. Pure: no cluster, no filesystem. Every structural error is collected with its
stage and config key, so one `launcher plan` shows all of them."""
from __future__ import annotations

import graphlib
import hashlib
import json
import math
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from launcher import backends, kinds
from launcher.plan import health, ignored, retention, snapshot, tracking, watchdog
from launcher.sbatch import options as sbatch_options
from launcher.config.environments import resolve as resolve_environment
from jobs import layout
from jobs.adapters import hub_refs

from launcher.errors import ConfigError, ConfigErrors
from launcher.kinds import Problems
from launcher.config.placeholders import walk
from launcher.sbatch.values import (MAX_SIGNAL_DELAY_S, mem_problem, parse_time_min, signal_problem,  # noqa: F401
                                   time_limit_min, time_problem)

# What must be equal across sweep points: one array job carries one resource request and one
# dependency list. Everything else (command, params, env) may differ per point.
STRUCTURAL_KEYS = ("kind", "tasks", "throttle", "after", "singleton", "resources", "requeue")
PAYLOAD_KEYS = ("command", "target", "params", "env")  # and each kind's own (Kind.payload_keys)
LARGE_SWEEP = 100  # points above which plan.json and the stage specs are written compact (Plan.large)


@dataclass
class Dep:
    parent: str
    kind: str  # the Slurm dependency kind actually used
    declared: str  # what the config said (differs when a sweep turns afterok into aftercorr)
    # Why `kind` is not what a sweep would make of `declared`: "shared" when the child's points map to
    # parent points of other indices (shared points, launcher/plan/keys.py), so the edge waits on the whole
    # parent array instead of pairing array indices (aftercorr).
    note: str = ""


@dataclass
class StagePlan:
    name: str
    kind: str
    tasks_per_point: int
    points: int
    throttle: Optional[int]
    time_min: Optional[int]  # None: UNLIMITED (preflight allows it only where the partition's MaxTime does)
    resources: Dict[str, Any]
    requeue: Dict[str, Any]
    singleton: bool
    deps: List[Dep]
    hash: str
    payloads: List[Dict[str, Any]] = field(repr=False)  # per point: command/target/params/env
    environment: Dict[str, Any] = field(default_factory=dict)  # interpreter, setup, container (see environments)
    # A sweep that changes the stage's resources: the resource sets (group g: group_resources[g], its
    # time limit group_time_min[g]) and each point's group; empty when every point has `resources`.
    # Each group is its own array job (render.build_requests).
    groups: List[int] = field(default_factory=list)
    group_resources: List[Dict[str, Any]] = field(default_factory=list)
    group_time_min: List[Optional[int]] = field(default_factory=list)
    external: Dict[str, str] = field(default_factory=dict)  # job id outside the run -> dependency kind (after.job:N)
    # Content identity (launcher/plan/keys.py, docs/content-keys.md): each point's key, and the point whose
    # task computes it (shared[p] == p: its own; empty: every point its own, a plan from before keys).
    keys: List[str] = field(default_factory=list)
    shared: List[int] = field(default_factory=list)
    cache: bool = True  # config `cache`: its points may reuse another run's output of their key
    # Points whose output another run of the run root completed (launcher/run/cache.py): {point (as text,
    # a JSON key): {"run": run dir, "point": its point there, "hash": its stage hash there}}. Not submitted.
    cached: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    # Jobs of other runs computing points this stage's tasks need (launcher/run/inflight.py): {job ref:
    # "afterok"}, a Slurm job id or `<run dir>#<job id>` on the local scheduler. Outside the hash.
    inflight: Dict[str, str] = field(default_factory=dict)
    # Experiment tracking (launcher/plan/tracking.py resolve): the profile's default under the stage's keys;
    # empty: none. Outside the hash: it changes what is logged, not what is computed.
    tracking: Dict[str, Any] = field(default_factory=dict)

    @property
    def total_tasks(self) -> int:
        return self.tasks_per_point * self.points

    def to_json(self) -> Dict[str, Any]:
        """The fields as dataclasses.asdict gives them, without its deep copy of every point's payload
        (the JSON writer reads them as they are)."""
        import dataclasses

        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["deps"] = [asdict(d) for d in self.deps]
        return out

    def point_of(self, point: int) -> int:
        """The sweep point whose tasks compute this point's output (itself unless shared)."""
        return self.shared[point] if self.shared else point

    def task_of(self, task: int) -> int:
        """The global task that computes this task's output: the same index within the sharing point."""
        point, index = self.split(task)
        return self.point_of(point) * self.tasks_per_point + index

    def run_tasks(self) -> List[int]:
        """The global tasks this run computes: every task of each point that computes its own key and
        has no cached output (those are `cached_tasks`)."""
        return [t for t in range(self.total_tasks) if self.task_of(t) == t and str(self.split(t)[0]) not in self.cached]

    def cached_tasks(self) -> List[int]:
        """The global tasks whose point's output another run computed (launcher/run/cache.py)."""
        return [t for t in range(self.total_tasks) if self.task_of(t) == t and str(self.split(t)[0]) in self.cached]

    @property
    def distinct_points(self) -> int:
        return len(set(self.shared)) if self.shared else self.points

    def split(self, task: int) -> tuple[int, int]:
        """Global array task → (sweep point, task within the point)."""
        return divmod(task, self.tasks_per_point)

    def group_of(self, task: int) -> int:
        """The resource group of a global task (0 when the sweep does not change the resources)."""
        return self.groups[task // self.tasks_per_point] if self.groups else 0

    def resources_of(self, group: int) -> Tuple[Dict[str, Any], Optional[int]]:
        """(resources, time limit in minutes or None for UNLIMITED) of a resource group."""
        if not self.groups:
            return self.resources, self.time_min
        return self.group_resources[group], self.group_time_min[group]

    def point_resources(self, point: int) -> Dict[str, Any]:
        """The resources of a sweep point."""
        return self.group_resources[self.groups[point]] if self.groups else self.resources

    def group_views(self) -> List["StagePlan"]:
        """The stage once per resource group, each with that group's resources and time limit (what
        preflight checks against the cluster); [self] without groups."""
        from dataclasses import replace

        return [replace(self, resources=r, time_min=t, groups=[], group_resources=[], group_time_min=[])
                for r, t in (self.resources_of(g) for g in range(self.group_count))] if self.groups else [self]

    @property
    def group_count(self) -> int:
        return len(self.group_resources) or 1

    @property
    def gpu_hours(self) -> float:
        """Upper bound: every task runs to its time limit (inf for an UNLIMITED stage with GPUs)."""
        total = 0.0
        for g in range(self.group_count):
            r, time_min = self.resources_of(g)
            points = self.groups.count(g) if self.groups else self.points
            gpus = points * self.tasks_per_point * r["nodes"] * r["gpus_per_node"]
            if gpus and time_min is None:
                return math.inf
            total += gpus * (time_min or 0) / 60
        return total


@dataclass
class Plan:
    pipeline: str
    cluster: Dict[str, Any]
    points: List[List[str]]  # the overrides of each sweep point
    stages: Dict[str, StagePlan]  # in topological order
    code: List[str] = field(default_factory=list)  # user code paths to snapshot (absolute)
    aliases: Dict[str, str] = field(default_factory=dict)  # expanded stage (minhash) → the stage that ends it
    campaign: Optional[str] = None  # runs that belong together (config `campaign`)
    independent: bool = False  # sweep.independent: every stage submitted per point, edges within a point

    def to_json(self) -> Dict[str, Any]:
        return {"pipeline": self.pipeline, "cluster": self.cluster, "points": self.points, "code": self.code,
                "aliases": self.aliases, "campaign": self.campaign, "independent": self.independent,
                "stages": [s.to_json() for s in self.stages.values()]}

    @property
    def large(self) -> bool:
        """A sweep whose plan files are written compact (layout.atomic_write_json): over LARGE_SWEEP points."""
        return len(self.points) > LARGE_SWEEP

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "Plan":
        stages = {}
        for s in d["stages"]:
            s = dict(s, deps=[Dep(**x) for x in s["deps"]])
            stages[s["name"]] = StagePlan(**s)
        return cls(pipeline=d["pipeline"], cluster=d["cluster"], points=d["points"], stages=stages,
                   code=d.get("code", []), aliases=d.get("aliases", {}), campaign=d.get("campaign"),
                   independent=d.get("independent", False))

    @property
    def gpu_hours(self) -> float:
        return sum(s.gpu_hours for s in self.stages.values())


# Names end up in paths, job names and variable names: keep them boring.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ENV_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_TASKS = 4_000_001  # slurm.conf(5): MaxArraySize "may not exceed 4000001"
RESERVED_PREFIX = "LAUNCHER_"  # variables the launcher sets in every task (jobs/task.py Task.environment)


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def build_plan(plain: Sequence[Dict[str, Any]], points: Sequence[Sequence[str]]) -> Plan:
    """One composed (plain, resolved) config per sweep point → the plan. Raises ConfigErrors listing
    every problem."""
    errors: List[ConfigError] = []
    unread: List[ConfigError] = []  # reported with the other checks below, not instead of them
    plain, external = _split_external(plain, points, errors)
    plain, aliases = _expand(plain, errors, unread)
    first = plain[0]
    _check_sweep_keeps_structure(plain, points, errors)
    stages_cfg: Dict[str, Dict[str, Any]] = first["pipeline"]["stages"]
    if not stages_cfg:
        errors.append(ConfigError("the pipeline has no stages", key="pipeline.stages"))
    code = [os.path.abspath(p) for p in first["pipeline"]["code"]]
    errors += snapshot.check(code, run_root=os.path.abspath(first.get("run_root") or "runs"),
                             max_mb=first["pipeline"].get("code_max_mb", 50.0))

    _check_names(first, errors)
    _check_cluster(first, errors)
    _dedupe(unread)
    errors += unread
    graph = _check_stages(plain, stages_cfg, errors)
    order: List[str] = []
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as e:
        cycle = e.args[1]
        errors.append(ConfigError(f"dependency cycle: {' -> '.join(reversed(cycle))}", stage=cycle[0],
                                  key=f"pipeline.stages.{cycle[0]}.after"))
    _check_clients(stages_cfg, errors)
    for cfg in plain:  # every point: a sweep may set tracking keys
        tracking.check(cfg, errors)
    _check_ports(first["cluster"], stages_cfg, errors)
    health.check(first["cluster"], errors)
    ancestors: Dict[str, set] = {}
    for name in order:
        ancestors[name] = set(graph[name]).union(*(ancestors[p] for p in graph[name]))
        st = stages_cfg[name]
        kinds.get(st["kind"]).check_in_dag(Problems(name, errors), st, stages_cfg, ancestors[name])
    if errors:
        _dedupe(errors)
        raise ConfigErrors(errors)

    n_points = len(plain)
    stages: Dict[str, StagePlan] = {}
    for name in order:
        st = stages_cfg[name]
        try:
            environment = resolve_environment(first["cluster"], name, st["kind"], kinds.get(st["kind"]).environment_name(st))
        except ConfigError as e:
            errors.append(e)
            environment = {}
        deps = [Dep(parent=p, kind=_slurm_edge(name, st, p, stages_cfg[p], declared, n_points, errors), declared=declared)
                for p, declared in st["after"].items()]
        keys = PAYLOAD_KEYS + kinds.get(st["kind"]).payload_keys
        payloads = _payloads(plain, name, keys, errors)
        structure = _structure(st, external.get(name, {}))  # with the jobs outside the run
        groups, group_resources = _resource_groups(plain, name)
        if groups:  # the hash covers every point's resources
            structure["resources"] = [_structure({**st, "resources": r}, {})["resources"] for r in group_resources]
        parent_hashes = {d.parent: stages[d.parent].hash for d in deps if d.parent in stages}
        stages[name] = StagePlan(
            name=name, kind=st["kind"], tasks_per_point=st["tasks"], points=n_points, throttle=st["throttle"],
            time_min=time_limit_min(st["resources"]["time"]), resources=dict(st["resources"]),
            requeue=dict(st["requeue"]), singleton=st["singleton"], deps=deps, cache=st.get("cache", True),
            hash=_digest([structure, payloads, parent_hashes]), payloads=payloads, environment=environment,
            groups=groups, group_resources=group_resources,
            group_time_min=[time_limit_min(r["time"]) for r in group_resources], external=external.get(name, {}),
            tracking=tracking.resolve(first, st))
        if any(tracking.resolve(p, p["pipeline"]["stages"][name]) != stages[name].tracking for p in plain[1:]):
            errors.append(ConfigError("tracking differs between sweep points; one stage logs one way (a point is "
                                      "already its own tracked run)", stage=name, key=f"pipeline.stages.{name}.tracking"))
    _raise_if(errors)
    return Plan(pipeline=first["pipeline"]["name"], cluster=first["cluster"], points=[list(p) for p in points],
                stages=stages, code=code, aliases=aliases, campaign=first.get("campaign"),
                independent=bool((first.get("sweep") or {}).get("independent")) and len(plain) > 1)


def _check_stages(plain: Sequence[Dict[str, Any]], stages_cfg: Dict[str, Dict[str, Any]],
                  errors: List[ConfigError]) -> Dict[str, List[str]]:
    """Each stage's own checks (once per resource set of a sweep) and its edges: the graph
    {stage: parents} of the stages that can be ordered."""
    graph: Dict[str, List[str]] = {}
    for name, st in stages_cfg.items():
        key = f"pipeline.stages.{name}"
        if not NAME.match(name):
            errors.append(ConfigError(f"stage name {name!r} must match {NAME.pattern} (it names folders and jobs)",
                                      stage=name, key=key))
            continue
        _check_stage(name, st, key, errors)
        texts: Dict[int, str] = {}
        seen = {_resources_text(st["resources"], texts)}
        for cfg in plain[1:]:  # a point with other resources is checked with them (and its own work)
            other = cfg["pipeline"]["stages"].get(name)
            if other and (k := _resources_text(other["resources"], texts)) not in seen:
                seen.add(k)
                _check_stage(name, other, key, errors)
        parents = []
        for parent in st["after"]:
            if parent not in stages_cfg:
                errors.append(ConfigError(f"unknown stage '{parent}' (stages: {', '.join(stages_cfg)})",
                                          stage=name, key=f"{key}.after.{parent}"))
            elif parent == name:
                errors.append(ConfigError("a stage cannot wait for itself", stage=name, key=f"{key}.after"))
            else:
                parents.append(parent)
        graph[name] = parents
    return graph


def _resources_text(resources: Dict[str, Any], texts: Dict[int, str]) -> str:
    """A stage's resources as canonical JSON, made once per object: the sweep points that do not change
    them share one (launcher/config/incremental.py). `texts` lives while the configs do (ids unique)."""
    if id(resources) not in texts:
        texts[id(resources)] = json.dumps(resources, sort_keys=True, default=str)
    return texts[id(resources)]


def _resource_groups(plain: Sequence[Dict[str, Any]], name: str) -> Tuple[List[int], List[Dict[str, Any]]]:
    """(group of each point, resources of each group) for a stage whose sweep changes its resources,
    groups numbered in the order of their first point; ([], []) when every point asks the same."""
    keys: Dict[str, int] = {}
    texts: Dict[int, str] = {}
    groups, resources = [], []
    for cfg in plain:
        r = cfg["pipeline"]["stages"][name]["resources"]
        key = _resources_text(r, texts)
        if key not in keys:
            keys[key] = len(resources)
            resources.append(r)
        groups.append(keys[key])
    return (groups, resources) if len(resources) > 1 else ([], [])


EXTERNAL_PREFIX = "job:"  # after: {job:12345: afterok}: a Slurm job outside the run (stage names hold no ':')
EXTERNAL_ID = re.compile(r"^[1-9][0-9]*$")
EXTERNAL_KINDS = ("afterok", "afterany", "afternotok", "after")  # aftercorr pairs tasks of two arrays of the run


def _split_external(plain, points, errors: List[ConfigError]) -> tuple[list, Dict[str, Dict[str, str]]]:
    """The configs with the `job:<id>` entries taken out of every stage's `after` (copies: the configs
    are recorded as given), as the DAG and the kinds see only the run's own stages; and {stage: {job id:
    kind}}, checked: an id of digits, a kind sbatch can apply to another job, a Slurm cluster, the same
    in every sweep point. Whether the job exists is preflight's question (the backend's check_external, launcher/slurm/checks.py)."""
    out: Dict[str, Dict[str, str]] = {}
    stripped = []
    copies: Dict[int, Dict[str, Any]] = {}  # a stage several points share stays shared (one copy)
    for i, cfg in enumerate(plain):
        stages = dict(cfg.get("pipeline", {}).get("stages") or {})
        stripped.append({**cfg, "pipeline": {**cfg.get("pipeline", {}), "stages": stages}})
        for name, st in stages.items():
            if not isinstance(st, dict) or not isinstance(st.get("after"), dict):
                continue
            jobs = {k[len(EXTERNAL_PREFIX):]: v for k, v in st["after"].items() if str(k).startswith(EXTERNAL_PREFIX)}
            if id(st) not in copies:
                copies[id(st)] = {**st, "after": {k: v for k, v in st["after"].items()
                                                  if not str(k).startswith(EXTERNAL_PREFIX)}}
            stages[name] = copies[id(st)]
            if i == 0:
                out[name] = jobs
            elif jobs != out.get(name, {}):
                errors.append(ConfigError(f"differs between sweep points ({points[i]}); one array job has one "
                                          f"dependency list", stage=name, key=f"pipeline.stages.{name}.after"))
    backend = plain[0]["cluster"]["backend"]
    for name, jobs in out.items():
        for job, kind in jobs.items():
            key = f"pipeline.stages.{name}.after.{EXTERNAL_PREFIX}{job}"
            if not EXTERNAL_ID.match(job):
                errors.append(ConfigError(f"'{EXTERNAL_PREFIX}{job}': a Slurm job id is digits "
                                          f"({EXTERNAL_PREFIX}12345)", stage=name, key=key))
            elif kind not in EXTERNAL_KINDS:
                errors.append(ConfigError(f"{kind} pairs the tasks of two arrays of this run; on a job outside it "
                                          f"use {', '.join(EXTERNAL_KINDS)}", stage=name, key=key))
            elif backend not in backends.names() or not backends.get(backend).waits_on_jobs:
                errors.append(ConfigError(f"waits on Slurm job {job}, and cluster '{plain[0]['cluster']['name']}' "
                                          f"(backend {backend}) runs no Slurm jobs: use a Slurm profile (cluster=...) "
                                          f"or remove the entry", stage=name, key=key))
    return stripped, {name: jobs for name, jobs in out.items() if jobs}


def env_set(cfg: Dict[str, Any]) -> Dict[str, str]:
    """hydra.job.env_set of a composed config (compose.compose_each keeps it): variables for every stage."""
    return ((cfg.get("hydra") or {}).get("job") or {}).get("env_set") or {}


def _payloads(plain: List[Dict[str, Any]], name: str, keys, errors: List[ConfigError]) -> List[Dict[str, Any]]:
    """Every point's payload of stage `name`: one object for the points that share the stage's config
    object and hydra node (a sweep that does not touch the stage: launcher/config/incremental.py), so
    the content keys digest it once (launcher/plan/keys.py). Read-only, like the configs."""
    made: Dict[tuple, Dict[str, Any]] = {}
    payloads = []
    for p in plain:
        ident = (id(p["pipeline"]["stages"][name]), id(p.get("hydra")))
        if ident not in made:
            made[ident] = _payload(p, name, keys, errors)
        payloads.append(made[ident])
    return payloads


def _payload(cfg: Dict[str, Any], name: str, keys, errors: List[ConfigError]) -> Dict[str, Any]:
    """What a task of stage `name` does at one point; its env gets hydra.job.env_set's variables, as if
    every stage had them in its own env (a stage that sets one of them to another value: an error)."""
    st = cfg["pipeline"]["stages"][name]
    payload = {k: st[k] for k in keys}
    if (w := watchdog.payload(st)) is not None:  # only when on: other stages keep their hashes
        payload["watchdog"] = w
    if (r := retention.payload(st)) is not None:  # the same: only when on
        payload["retention"] = r
    extra = env_set(cfg)
    if extra:
        for k, v in extra.items():
            if k in st["env"] and str(st["env"][k]) != v:
                errors.append(ConfigError(
                    f"the stage's own env sets {k} to {st['env'][k]!r} (pipeline.stages.{name}.env.{k}), "
                    f"hydra.job.env_set to {v!r}; set it in one place", stage=name, key=f"hydra.job.env_set.{k}"))
        payload["env"] = {**extra, **st["env"]}
    return payload


def _structure(st: Dict[str, Any], external: Dict[str, str]) -> Dict[str, Any]:
    """What of a stage its hash covers besides the work. The sbatch options added later count only
    when given, so a run planned before they existed keeps its hashes (and resumes). The jobs outside
    the run count as written in `after` (`st` has them taken out: _split_external)."""
    structure = {k: st[k] for k in STRUCTURAL_KEYS}
    structure["after"] = {**st["after"], **{f"{EXTERNAL_PREFIX}{j}": k for j, k in external.items()}}
    structure["resources"] = {k: v for k, v in st["resources"].items()
                              if k not in sbatch_options.LATER_KEYS or v not in (None, {}, "")}
    return structure


def _resolve_resources(plain: Sequence[Dict[str, Any]], errors: List[ConfigError]) -> List[Dict[str, Any]]:
    """Every stage's resources with the profile's defaults applied and gpus_per_node split into a
    count and a type (launcher/sbatch/options.py resolve), before any kind reads them; a value that
    cannot be read is an error here (once, for the first point) and a count of 0 after. A stage that
    several points share (the same mapping, launcher/config/incremental.py) stays shared."""
    out = []
    done: Dict[tuple, Dict[str, Any]] = {}  # (id of the stage, id of the defaults) -> its resolved copy
    # (id of the stage's resources, id of the defaults) -> (those resources, kept so that no other object
    # takes their id, and their resolved form): points that change a stage's command, not its resources
    resolved: Dict[tuple, tuple] = {}
    for i, cfg in enumerate(plain):
        defaults = (cfg["cluster"].get("resources") or {})
        stages = {}
        for name, st in cfg["pipeline"]["stages"].items():
            if i > 0 and (id(st), id(defaults)) in done:
                stages[name] = done[id(st), id(defaults)]
                continue
            own = st.get("resources") or {}
            if i > 0 and (id(own), id(defaults)) in resolved:
                stages[name] = done[id(st), id(defaults)] = {**st, "resources": resolved[id(own), id(defaults)][1]}
                continue
            resources, problems = sbatch_options.resolve(own, defaults)
            resolved[id(own), id(defaults)] = (own, resources)
            if i == 0:  # the values of the sbatch options, each under the key it came from
                for k, msg in problems + sbatch_options.resource_problems(resources):
                    field, _, option = k.partition(".")
                    if (own.get(field) is None or (option and option not in own.get(field, {}))) \
                            and defaults.get(field) not in (None, {}):
                        errors.append(ConfigError(msg, key=f"cluster.resources.{k}"))
                    else:
                        errors.append(ConfigError(msg, stage=name, key=f"pipeline.stages.{name}.resources.{k}"))
            stages[name] = done[id(st), id(defaults)] = {**st, "resources": resources}
        out.append({**cfg, "pipeline": {**cfg["pipeline"], "stages": stages}})
    return out


def _expand(plain: Sequence[Dict[str, Any]], errors: List[ConfigError], unread: List[ConfigError]):
    """The checks of the configs as written (ConfigErrors if any fails), then every kind's expansion
    (minhash → its four stages, then the fetch stage): (the expanded configs, aliases). Options a
    stage's kind would ignore go to `unread`, reported with the checks of the expanded plan."""
    plain = _resolve_resources(plain, errors)
    _check_kinds(plain)
    for name, st in plain[0]["pipeline"]["stages"].items():
        kinds.get(st["kind"]).check_before_expansion(Problems(name, errors), st)
    # before the expansion and the fetch stage overwrite a stage; once per distinct set of stages
    for cfg in {tuple(map(id, c["pipeline"]["stages"].values())): c for c in plain}.values():
        _check_collisions(cfg, errors)
    ignored.check(plain, unread)
    _dedupe(errors)
    if errors:
        raise ConfigErrors(errors)
    aliases: Dict[str, str] = {}
    plain = list(plain)
    for kind in kinds.all_kinds():
        plain, more = kind.expand_pipeline(plain)
        aliases.update(more)
    return _resolve_resources(plain, []), aliases  # the stages the expansion added (fetch) get the defaults too


def _check_cluster(cfg: Dict[str, Any], errors: List[ConfigError]) -> None:
    """The profile's (and the root's) own numbers and choices: each read as written by the verbs."""
    cl = cfg["cluster"]

    def bad(key: str, msg: str) -> None:
        errors.append(ConfigError(msg, key=key))

    for key, value, choices in (("cluster.backend", cl["backend"], tuple(backends.names())),
                                ("cluster.hub_fetch", cl.get("hub_fetch", "auto"), ("auto", "never"))):
        if value not in choices:
            bad(key, f"must be {' or '.join(choices)}, got {value!r}")
    if cl.get("max_array_size") is not None and cl["max_array_size"] < 1:
        bad("cluster.max_array_size", f"must be >= 1 or null (MaxArraySize from Slurm), got {cl['max_array_size']}")
    for key in ("max_parallel", "gpus_per_node"):
        if cl.get(key, 0) < 0:
            bad(f"cluster.{key}", f"must be >= 0, got {cl[key]}")
    # `launcher plan` divides by these for its GPU-hour estimate.
    if not (math.isfinite(cl["gpu_peak_tflops"]) and cl["gpu_peak_tflops"] > 0):
        bad("cluster.gpu_peak_tflops", f"must be a number > 0, got {cl['gpu_peak_tflops']}")
    if not (math.isfinite(cl["expected_mfu"]) and 0 < cl["expected_mfu"] <= 1):
        bad("cluster.expected_mfu", f"a share of the peak: must be in (0, 1], got {cl['expected_mfu']}")
    if not (math.isfinite(cfg.get("poll_s", 0)) and cfg.get("poll_s", 0) >= 0):
        bad("poll_s", f"must be >= 0 (0: the backend's default), got {cfg['poll_s']}")


def _check_ports(cluster: Dict[str, Any], stages: Dict[str, Dict[str, Any]], errors: List[ConfigError]) -> None:
    """Multi-process stages rendezvous on rdzv_port_base + job id % 10000 (jobs/adapters/torchrun.py rdzv_port),
    which must be a port (1024..65535) whatever the job id."""
    users = [n for n, st in stages.items() if kinds.get(st["kind"]).multi_process(st)]
    base = cluster.get("rdzv_port_base", 20000)
    if users and not 1024 <= base <= 55535:
        errors.append(ConfigError(f"must be in 1024..55535 (ports base..base+9999 are used, by job id), got {base}; "
                                  f"used by {', '.join(users)}", key="cluster.rdzv_port_base"))


def _check_kinds(plain: Sequence[Dict[str, Any]]) -> None:
    """Every stage names a registered kind (launcher/kinds); raises ConfigErrors otherwise, before any
    kind's hook is asked."""
    errors = [ConfigError(kinds.unknown_message(st["kind"]), stage=name, key=f"pipeline.stages.{name}.kind")
              for cfg in plain for name, st in cfg["pipeline"]["stages"].items() if st["kind"] not in kinds.names()]
    _dedupe(errors)
    if errors:
        raise ConfigErrors(errors)


def _check_clients(stages: Dict[str, Dict[str, Any]], errors: List[ConfigError]) -> None:
    """A stage that uses a server must start while it serves: edge `after` (starts with the server, then
    waits for its endpoint). afterok would wait for the server to stop."""
    for name, st in stages.items():
        for parent, edge in st["after"].items():
            if parent in stages and kinds.get(stages[parent]["kind"]).provides_endpoint and edge != "after":
                errors.append(ConfigError(
                    f"'{parent}' is a server: wait on it with `after` (the stage starts with the server and gets "
                    f"its endpoint once published); {edge} would wait until the server has stopped",
                    stage=name, key=f"pipeline.stages.{name}.after.{parent}"))


def _check_collisions(cfg: Dict[str, Any], errors: List[ConfigError]) -> None:
    """Stage names become other names: the stages a minhash stage expands into (<name>.signatures,
    ...), the fetch stage the plan adds (hub_fetch), the variables a task finds its parents' outputs
    and its servers' endpoints in (LAUNCHER_INPUT_<NAME>, LAUNCHER_ENDPOINT_<NAME>[_MODEL]: upper case,
    other characters '_') and run folders (stages/<name>/, one folder on a case-insensitive
    filesystem). Two stages that meet in any of them would see or overwrite each other's: refused,
    naming both (the later one in the config is the one reported)."""
    stages = cfg["pipeline"]["stages"]
    origin: Dict[str, str] = {n: n for n in stages}  # stage of the plan -> the config stage it comes from

    def clash(name: str, other: str, what: str) -> None:
        other = other if other.endswith("'") else f"{other}'"
        errors.append(ConfigError(f"collides with stage '{other}: {what}; rename one of them", stage=name,
                                  key=f"pipeline.stages.{name}"))

    for name, st in stages.items():
        parts = kinds.get(st["kind"]).expands_into(name)
        for part in parts:
            if part in stages:
                clash(part, name, f"kind={st['kind']} stage '{name}' expands into {', '.join(parts)}")
            else:
                origin[part] = name
    for kind in kinds.all_kinds():
        kind.check_pipeline(cfg, errors)
    transforms = [
        (lambda n: [layout.input_variable(n)], "both become {} (a child's variable for its parent's output)",
         lambda n: True),
        (lambda n: list(layout.endpoint_variables(n)), "both set {} (a client's variable for its server's endpoint)",
         lambda n: kinds.get(stages[origin[n]]["kind"]).provides_endpoint),
        (lambda n: [f"stages/{n.lower()}"], "their folders are one folder ({}) on a case-insensitive filesystem",
         lambda n: True),
    ]
    reported = set()
    for names_of, what, applies in transforms:
        seen: Dict[str, str] = {}
        for n in origin:
            if not applies(n):
                continue
            for made in names_of(n):
                other = seen.setdefault(made, n)
                pair = frozenset((origin[other], origin[n]))
                if origin[other] != origin[n] and pair not in reported:
                    reported.add(pair)
                    part = f" (kind={stages[origin[n]]['kind']}: its part '{n}')" if n != origin[n] else ""
                    other_part = f" (its part '{other}')" if other != origin[other] else ""
                    clash(origin[n], f"{origin[other]}'{other_part}", what.format(made) + part)


def _raise_if(errors: List[ConfigError]) -> None:
    """ConfigErrors with each problem once (sweep points repeat the same finding), if there is any."""
    _dedupe(errors)
    if errors:
        raise ConfigErrors(errors)


def _dedupe(errors: List[ConfigError]) -> None:
    """One error per (stage, key, message): sweep points repeat the same finding."""
    seen, unique = set(), []
    for e in errors:
        if (e.stage, e.key, e.message) not in seen:
            seen.add((e.stage, e.key, e.message))
            unique.append(e)
    errors[:] = unique


def _check_names(cfg: Dict[str, Any], errors: List[ConfigError]) -> None:
    """Names that become paths or job names, and variable names that are exported in scripts."""
    for key, value in (("pipeline.name", cfg["pipeline"]["name"]), ("run_name", cfg.get("run_name"))):
        if value is not None and not NAME.match(str(value)):
            errors.append(ConfigError(f"{value!r} must match {NAME.pattern}", key=key))
    cl = cfg["cluster"]
    variables = [(f"cluster.env.{k}", k) for k in cl.get("env", {})]
    variables += [(f"cluster.environments.{n}.env.{k}", k) for n, e in (cl.get("environments") or {}).items()
                  for k in e.get("env", {})]
    variables += [(f"cluster.secrets.{i}", k) for i, k in enumerate(cl.get("secrets") or [])]
    variables += [(f"pipeline.stages.{s}.env.{k}", k) for s, st in cfg["pipeline"]["stages"].items()
                  for k in st.get("env", {})]
    variables += [(f"hydra.job.env_set.{k}", k) for k in env_set(cfg)]
    for key, var in variables:
        stage = key.split(".")[2] if key.startswith("pipeline.stages.") else None
        if not ENV_VAR.match(var):
            errors.append(ConfigError(f"{var!r} is not a valid environment variable name", stage=stage, key=key))
        elif var.startswith(RESERVED_PREFIX) and not key.startswith("cluster.secrets"):
            errors.append(ConfigError(
                f"{RESERVED_PREFIX}* variables are the launcher's own: each task gets LAUNCHER_TASK_OFFSET, "
                f"LAUNCHER_OUTPUT_DIR, LAUNCHER_INPUT_<STAGE>, ... from it, and a value here would collide with "
                f"one of them; choose another name", stage=stage, key=key))


def _check_stage(name: str, st: Dict[str, Any], key: str, errors: List[ConfigError]) -> None:
    def bad(k: str, msg: str) -> None:
        errors.append(ConfigError(msg, stage=name, key=f"{key}.{k}"))

    # hf:// strings anywhere in the stage's work: a malformed one would reach the task as a plain string.
    for k, v in walk({k: v for k, v in st.items() if k not in ("after", "resources", "requeue")}, key):
        if isinstance(v, str) and (msg := hub_refs.problem(v)):
            errors.append(ConfigError(msg, stage=name, key=k))
    kinds.get(st["kind"]).check_config(Problems(name, errors), st)
    if st["tasks"] < 1:
        bad("tasks", f"must be >= 1, got {st['tasks']}")
    elif st["tasks"] > MAX_TASKS:
        bad("tasks", f"{st['tasks']} array tasks: no Slurm holds that many (MaxArraySize is at most {MAX_TASKS:,}, "
                     f"slurm.conf(5), and every task is a job record)")
    if st["throttle"] is not None and st["throttle"] < 1:
        bad("throttle", f"must be >= 1 or null, got {st['throttle']}")
    r = st["resources"]
    for k in ("nodes", "ntasks_per_node", "cpus_per_task"):
        if r[k] < 1:
            bad(f"resources.{k}", f"must be >= 1, got {r[k]}")
    # In the units Slurm enforces, after rendering's rounding (launcher/sbatch/values.py).
    if r["mem_gb"] is not None and (msg := mem_problem(r["mem_gb"], all_memory=True)):
        bad("resources.mem_gb", msg)
    time_min = None
    if msg := time_problem(r["time"]):
        bad("resources.time", msg)
    else:
        time_min = time_limit_min(r["time"])
    rq = st["requeue"]
    if rq["max"] < 0:
        bad("requeue.max", f"must be >= 0, got {rq['max']}")
    if msg := signal_problem(rq["signal"]):
        bad("requeue.signal", msg)
    if rq["signal_delay_s"] > MAX_SIGNAL_DELAY_S:
        bad("requeue.signal_delay_s", f"{rq['signal_delay_s']} s is over the {MAX_SIGNAL_DELAY_S} s that sbatch "
                                      f"--signal takes")
    elif rq["signal_delay_s"] <= 0 or (time_min is not None and rq["signal_delay_s"] >= time_min * 60):
        bad("requeue.signal_delay_s",
            f"{rq['signal_delay_s']} s must be positive and shorter than the time limit ({time_min * 60} s)")
    if rq["term_grace_s"] < 1 or (time_min is not None and rq["term_grace_s"] >= time_min * 60):
        bad("requeue.term_grace_s",
            f"{rq['term_grace_s']} s must be at least 1 and shorter than the time limit"
            + (f" ({time_min * 60} s)" if time_min is not None else "")
            + "; keep it below Slurm's KillWait (default 30 s) and any preemption GraceTime")
    watchdog.check(name, st, errors)
    retention.check(name, st, errors)


def _slurm_edge(name, st, parent, parent_st, declared, n_points, errors) -> str:
    """The Slurm dependency that implements a declared edge. In a sweep, a 1-task → 1-task afterok
    edge becomes aftercorr: point p's child waits only for point p's parent. Fan-in/fan-out edges keep
    waiting on the whole parent array (Slurm cannot express 'task p waits for tasks 4p..4p+3')."""
    if declared == "aftercorr":
        if st["tasks"] != parent_st["tasks"]:
            errors.append(ConfigError(
                f"aftercorr needs arrays of equal size: '{parent}' has {parent_st['tasks']} task(s) per point, "
                f"'{name}' has {st['tasks']}", stage=name, key=f"pipeline.stages.{name}.after.{parent}"))
        return "aftercorr"
    if declared == "afterok" and n_points > 1 and st["tasks"] == 1 and parent_st["tasks"] == 1:
        return "aftercorr"
    return declared


def _check_sweep_keeps_structure(plain, points, errors: List[ConfigError]) -> None:
    """Points of one sweep share each stage's array job: they may change what a task does and its
    resources (each resource set is its own array job: _resource_groups), not its task count or
    dependencies, nor the set of stages or the cluster."""
    base = plain[0]
    for cfg, overrides in zip(plain[1:], points[1:]):
        for key in ("cluster",):
            if cfg[key] != base[key]:
                errors.append(ConfigError(f"a sweep cannot change the {key} (point {overrides})", key=key))
        if set(cfg["pipeline"]["stages"]) != set(base["pipeline"]["stages"]):
            errors.append(ConfigError(f"a sweep cannot change the set of stages (point {overrides})",
                                      key="pipeline.stages"))
            continue
        for name, st in cfg["pipeline"]["stages"].items():
            b_st = base["pipeline"]["stages"][name]
            for k in kinds.get(st["kind"]).sweep_keys():
                if _get(st, k) != _get(b_st, k):
                    errors.append(ConfigError(
                        f"differs between sweep points ({overrides}); one array job is launched one way",
                        stage=name, key=f"pipeline.stages.{name}.{k}"))
            for k in STRUCTURAL_KEYS:
                if k != "resources" and st[k] != b_st[k]:  # resources: one array job per resource set
                    errors.append(ConfigError(
                        f"differs between sweep points ({overrides}); one array job has one value for it",
                        stage=name, key=f"pipeline.stages.{name}.{k}"))
    # One error per key is enough.
    seen, unique = set(), []
    for e in errors:
        if (e.stage, e.key) not in seen:
            seen.add((e.stage, e.key))
            unique.append(e)
    errors[:] = unique


def _get(node: Dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node
