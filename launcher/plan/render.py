"""Plan → job requests → sbatch scripts (rendered by submitit's own sbatch builder)."""
from __future__ import annotations

import functools
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from jobs import layout

from launcher import backends, kinds
from launcher.slurm import containers
from launcher.plan import health, retention, snapshot, tracking
from launcher.sbatch import options as sbatch_options
from launcher.sbatch.arrays import array_spec, chunk_of
from launcher.sbatch.lognames import filename_pattern, log_stem
from launcher.plan.model import Plan, StagePlan


@dataclass
class JobRequest:
    """One sbatch call: a chunk of one stage's array. Dependencies name parent stages (and, for
    aftercorr, the parent chunk); they become job ids only at submission, on sbatch's command line,
    so the script written by `launcher plan` is byte for byte the one `launcher run` submits."""

    stage: str
    chunk: int
    offset: int
    tasks: List[int]  # global task indices
    deps: List[Tuple[str, str, Optional[int]]] = field(default_factory=list)  # (kind, parent, chunk|None)
    script: Optional[Path] = None
    group: int = 0  # the stage's resource group (StagePlan.resources_of), for a sweep that changes them

    @property
    def indices(self) -> List[int]:
        return [t - self.offset for t in self.tasks]


def build_requests(plan: Plan, todo: Dict[str, Iterable[int]], chunk_size: int,
                   active_parents: Dict[str, List[str]] | None = None) -> List[JobRequest]:
    """Requests for the given tasks of each stage, in topological order. A dependency is added when
    the parent has tasks in this batch or still active jobs (`active_parents`, on resume).

    A request is one part of a stage's array: its tasks of one chunk (under MaxArraySize) and, when a
    sweep changes the stage's resources, of one resource group; an aftercorr edge from a stage cut
    that way cuts its child alike, so each part waits (aftercorr) on exactly one parent part holding
    the same indices (Slurm makes a task whose index the parent job lacks wait for the whole job).
    Without resource groups a part is a chunk (its number is the chunk's)."""
    active_parents = active_parents or {}
    requests: List[JobRequest] = []
    in_batch = set()
    keys = _part_keys(plan, chunk_size)
    for name, stage in plan.stages.items():
        tasks = sorted(set(todo.get(name, ())))
        if not tasks:
            continue
        parts: Dict[int, List[int]] = {}
        for t in tasks:
            parts.setdefault(keys[name](t), []).append(t)
        in_batch.add(name)
        for part, part_tasks in parts.items():
            deps = []
            for d in stage.deps:
                if not (d.parent in in_batch or active_parents.get(d.parent)):
                    continue
                if d.kind == "aftercorr":
                    deps.append((d.kind, d.parent, keys[d.parent](part_tasks[0])))
                elif plan.independent:  # this point's parent tasks only (parts are per point)
                    parent = plan.stages[d.parent]
                    point = parent.point_of(part_tasks[0] // stage.tasks_per_point)  # the point computing it
                    first = point * parent.tasks_per_point
                    deps += [(d.kind, d.parent, p) for p in
                             dict.fromkeys(keys[d.parent](t) for t in range(first, first + parent.tasks_per_point))]
                else:
                    deps.append((d.kind, d.parent, None))
            requests.append(JobRequest(stage=name, chunk=part, offset=chunk_of(part_tasks[0], chunk_size) * chunk_size,
                                       tasks=part_tasks, deps=deps, group=stage.group_of(part_tasks[0])))
    return requests


def _part_keys(plan: Plan, chunk_size: int) -> Dict[str, Callable[[int], int]]:
    """{stage: task -> part number}. A stage is cut by resource group when it has groups or an aftercorr
    parent that is cut (the child's parts then refine the parent's), and by point under
    sweep.independent; else its parts are its chunks."""
    numbering: Dict[str, Callable[[int], int]] = {}
    cut = set()
    for name, stage in plan.stages.items():  # topological order: parents first
        corr = [d.parent for d in stage.deps if d.kind == "aftercorr" and d.parent in numbering]
        if not stage.groups and not any(p in cut for p in corr) and not plan.independent:
            numbering[name] = functools.partial(chunk_of, chunk_size=chunk_size)
            continue
        cut.add(name)
        numbers: Dict[tuple, int] = {}
        point = (lambda t: t // stage.tasks_per_point) if plan.independent else (lambda t: 0)
        table = [numbers.setdefault((chunk_of(t, chunk_size), stage.group_of(t), point(t),
                                     tuple(numbering[p](t) for p in corr)), len(numbers))
                 for t in range(stage.total_tasks)]
        numbering[name] = table.__getitem__
    return numbering


def job_name(plan: Plan, stage: StagePlan, run_id: str) -> str:
    # Slurm's singleton dependency keys on job name and user: a singleton stage shares its name across
    # runs so only one of them runs at a time.
    return f"{plan.pipeline}.{stage.name}" if stage.singleton else f"{run_id}.{stage.name}"


def render_script(plan: Plan, req: JobRequest, run_dir: Path, run_id: str) -> str:
    from submitit.slurm.slurm import _make_sbatch_string

    from launcher.sbatch.values import mem_flag

    stage = plan.stages[req.stage]
    (r, time_min), cl, rq, env = stage.resources_of(req.group), plan.cluster, stage.requeue, stage.environment
    spec = layout.stage_dir(run_dir, stage.name) / "spec.json"
    setup = [f"export LAUNCHER_TASK_OFFSET={req.offset}",
             "export PYTHONPATH=" + ":".join(shlex.quote(str(p)) for p in snapshot.pythonpath(run_dir, plan.code))
             + "${PYTHONPATH:+:$PYTHONPATH}"]
    hub_env = kinds.get(stage.kind).environment(cl)  # the hub's variables (Kind.hub_access)
    setup += [f"export {k}={shlex.quote(str(v))}" for k, v in {**hub_env, **cl.get("env", {}), **env["env"]}.items()]
    lines = [*cl.get("setup", []), *env["setup"]]
    if lines:  # a failing setup line fails the task, and says which line it was
        setup += ["trap 'echo \"launcher: setup failed (exit $?): $BASH_COMMAND\" >&2; exit 1' ERR", *lines,
                  "trap - ERR"]
    # Tasks run in their code snapshot. Slurm starts a job in the submission directory (sbatch
    # --chdir), often the checkout being edited, and `python -m`/`-c` put the working directory
    # first on sys.path: jobs.task, a command's python, torchrun's and accelerate's workers would
    # import the live code from there instead of the snapshot. A `cd` (not --chdir) so the local
    # backend runs the same script, and Slurm expands no %-pattern in the path.
    code = snapshot.code_dir(run_dir)
    setup.append(f"cd {shlex.quote(str(code))} || exit 1")
    srun_args = []
    if multi_process(stage):  # one dead node (or rank) ends the whole step, not a hang until the time limit
        srun_args.append("--kill-on-bad-exit=1")
    teardown = None
    if env["container_image"]:  # pyxis, on the srun line only (launcher/slurm/containers.py)
        srun_args += containers.srun_args(cl, env, run_dir, workdir=code, read=kinds.get(stage.kind).container_paths(stage))
        in_container, teardown = containers.batch_lines()
        setup += in_container
    # throttle is per sweep point, like tasks: K points may run K times as many tasks at once
    points = len({t // stage.tasks_per_point for t in req.tasks}) if stage.groups else stage.distinct_points
    throttle = min(stage.throttle * points, stage.total_tasks) if stage.throttle else None
    extra = {"array": array_spec(req.indices, throttle), "signal": f"{rq['signal']}@{rq['signal_delay_s']}"}
    if rq["max"] > 0:
        extra["requeue"] = True
    if time_min is None:  # submitit's `time` is whole minutes; sbatch reads the word
        extra["time"] = "UNLIMITED"
    # Log paths are Slurm filename patterns: the folder goes in escaped (a run root with %x or %j in it
    # is a folder name, not a pattern), the file name keeps submitit's %A_%a_%t naming. submitit would
    # rewrite %j and %t anywhere in the path, so --output/--error and the srun line are given here.
    logs = layout.stage_dir(run_dir, stage.name) / "logs"
    pattern = filename_pattern(logs)
    extra.update(output=f"{pattern}/{log_stem(rank=0)}.out", error=f"{pattern}/{log_stem(rank=0)}.err")
    command = f"{shlex.quote(env['python'])} -u -m jobs.task {shlex.quote(str(spec))}"
    site_kw, site_extra = sbatch_options.submitit_parameters(r)
    extra = {**site_extra, **extra}  # the launcher's own options last (the plan refused them in the map)
    if backends.get(cl["backend"]).srun_steps:  # srun delivers --signal to the task; the local driver signals it
        command = shlex.join(["srun", "--unbuffered", "--output", f"{pattern}/{log_stem()}.out",
                              "--error", f"{pattern}/{log_stem()}.err", *srun_args]) + " " + command
    return _make_sbatch_string(
        command=command,
        folder=logs,
        job_name=job_name(plan, stage, run_id),
        partition=r["partition"] or cl.get("partition"),
        time=time_min,
        nodes=r["nodes"],
        ntasks_per_node=r["ntasks_per_node"],
        cpus_per_task=r["cpus_per_task"],
        gpus_per_node=(f"{r['gpu_type']}:{r['gpus_per_node']}" if r.get("gpu_type") else r["gpus_per_node"]) or None,
        # what preflight checked (slurm_values.mem_mb); 0 is sbatch's "all of the node's memory"
        mem=None if r["mem_gb"] is None else "0" if r["mem_gb"] == 0 else mem_flag(r["mem_gb"]),
        **site_kw,
        account=r["account"] or cl.get("account"),
        qos=r["qos"] or cl.get("qos"),
        constraint=r["constraint"],
        exclusive=True if r["exclusive"] else None,
        setup=setup,
        wckey=None,
        teardown=teardown,
        use_srun=False,  # the srun line is in `command` (log paths escaped)
        map_count=len(req.indices),  # the real --array is in `extra`
        additional_parameters=extra,
    )


def multi_process(stage: StagePlan) -> bool:
    """Stages whose tasks start torchrun (or accelerate) on every node."""
    return kinds.get(stage.kind).multi_process(stage.payloads[0])


def _output_layout(stage: StagePlan) -> str:
    """How a stage's output folders are laid out, for jobs/layout.py Folders: "datatrove", or "task"
    (one task per point) / "tasks"."""
    layout_ = kinds.get(stage.kind).output_layout
    return layout_ if layout_ != "task" else "task" if stage.tasks_per_point == 1 else "tasks"


def node_view(resources: Dict[str, Any]) -> Dict[str, Any]:
    """A stage's resources as the node side reads them: `gpus_per_node` is the GPUs each node of the
    allocation has for the job, in whichever form the stage asked for them (gpus_per_node, a gres gpu
    item, gpus_per_task x ntasks_per_node: launcher/sbatch/options.py node_gpus), so torchrun, vLLM and
    llama.cpp start a process or a shard per GPU also when a site asks for GPUs with --gres."""
    return {**resources, "gpus_per_node": sbatch_options.node_gpus(resources)}


def stage_spec(plan: Plan, stage: StagePlan, run_dir: Path, run_id: str) -> dict:
    """What jobs.task needs on the compute node: plain JSON, no launcher import there. The runner is
    the kind's node module (jobs/kinds/__init__.py runner_for); the kind adds what else it needs."""
    kind = kinds.get(stage.kind)
    spec = {
        "run_id": run_id, "run_dir": str(run_dir), "stage": stage.name, "kind": stage.kind, "hash": stage.hash,
        "runner": kind.runner,
        "tasks_per_point": stage.tasks_per_point, "points": stage.points, "payloads": stage.payloads,
        "parents": [d.parent for d in stage.deps], "requeue": stage.requeue, "time_min": stage.time_min,
        "backend": plan.cluster["backend"], "secrets_file": plan.cluster.get("secrets_file"),
        "campaign": plan.campaign or run_id, "hub_cache": plan.cluster.get("hub_cache"),
        "code_dir": str(snapshot.code_dir(run_dir)),  # jobs.task refuses to run from anywhere else
    }
    if kind.reads_stage_outputs:  # {input:<stage>}
        spec["stage_hashes"] = {n: s.hash for n, s in plan.stages.items()}  # datatrove folders are keyed by hash
        spec["stage_outputs"] = {n: _output_layout(s) for n, s in plan.stages.items()}
    servers = [plan.stages[d.parent] for d in stage.deps
               if kinds.get(plan.stages[d.parent].kind).provides_endpoint and d.kind == "after"]
    if servers:  # a client: waits for each server's endpoint before it runs
        spec["servers"] = {s.name: {"hash": s.hash, **kinds.get(s.kind).client_spec(s)} for s in servers}
    shared = {n: s.shared for n, s in plan.stages.items() if s.shared}
    if shared:  # points that read another point's output (launcher/plan/keys.py): jobs/layout.py point_of
        spec["shared_points"] = shared
    cached = {n: s.cached for n, s in plan.stages.items() if s.cached}
    if cached:  # points another run computed (launcher/run/cache.py): jobs/layout.py located
        spec["cached_outputs"] = cached
    if stage.groups:  # a sweep that changes the resources: each point's own (jobs/task.py picks it)
        spec["point_resources"] = [node_view(stage.group_resources[g]) for g in stage.groups]
    if kind.multi_process(stage.payloads[0]):
        spec["resources"] = node_view(stage.resources)
        spec["rdzv_port_base"] = plan.cluster.get("rdzv_port_base", 20000)
    if (check := health.spec_part(plan.cluster, stage)) is not None:  # each node checked before the work
        spec["health_check"] = check
        spec.setdefault("resources", node_view(stage.resources))
        spec.setdefault("rdzv_port_base", plan.cluster.get("rdzv_port_base", 20000))
    if (keep := retention.spec_part(plan, stage)) is not None:  # a training that prunes, or its evaluation
        spec["retention"] = keep
    if (t := tracking.spec_part(stage.tracking, run_id, plan.points)) is not None:
        spec["tracking"] = t  # jobs/adapters/tracking.py: report_to, the writers' folders and names
    spec.update(kind.spec_extra(plan, stage))
    return spec


def write_stage_files(plan: Plan, run_dir: Path, run_id: str, requests: List[JobRequest], tag: str) -> None:
    """Write each stage's spec and each request's script (scripts/<tag>-<chunk>.sbatch)."""
    for stage in plan.stages.values():
        layout.atomic_write_json(layout.stage_dir(run_dir, stage.name) / "spec.json",
                                 stage_spec(plan, stage, run_dir, run_id), compact=plan.large)
        for path, text in kinds.get(stage.kind).files(plan, stage, run_dir, run_id).items():
            layout.atomic_write_text(path, text)
    for req in requests:
        # Slurm opens --output before the task runs and does not create folders.
        (layout.stage_dir(run_dir, req.stage) / "logs").mkdir(parents=True, exist_ok=True)
        req.script = layout.stage_dir(run_dir, req.stage) / "scripts" / f"{tag}-{req.chunk}.sbatch"
        layout.atomic_write_text(req.script, render_script(plan, req, run_dir, run_id))
