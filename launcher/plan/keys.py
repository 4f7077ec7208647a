"""Content keys of stage points, and the sweep points that share one task.

A stage point's key is a digest of its parts (docs/content-keys.md lists them): the stage's work at
that point (kind, task count, the resources that shape the computation, its payload), the keys of
the stages it reads at that point, the code it can import, its environment's package list and the
identity of the external inputs its strings name. Points of one stage with equal keys compute the
same output: the first of them (in sweep order) runs, the others read its output.

Pure: what the files say (code digests, package lists, input sizes and times) comes in as `Facts`,
gathered by launcher/plan/key_facts.py. The stage hash (StagePlan.hash, markers/<hash>/) is left as it is:
it names the markers of runs planned before keys existed, which must still resume.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from jobs import layout

from launcher import kinds
from launcher.plan.model import Plan, StagePlan

# Resource fields that change what a task computes (its parallel layout); the others (time, partition,
# account, qos, memory, constraint, sbatch options) only say where and how long it may run.
KEY_RESOURCES = ("nodes", "ntasks_per_node", "gpus_per_node", "gpu_type")
HUB_PREFIX = "hf://"


@dataclass
class Facts:
    """What the login node's files say about the parts of a key (launcher/plan/key_facts.py gathers it).
    node_code: digest of the launcher's node side (jobs/, templates/) every task runs;
    code: {code path (absolute): digest of the files its snapshot holds};
    environments: {stage: (digest, what was digested)} of its environment's package list;
    inputs: {string as written in a payload: (digest, what was digested)} for the local paths that
    exist and the hub references."""

    node_code: str = ""
    code: Dict[str, str] = field(default_factory=dict)
    environments: Dict[str, Tuple[str, str]] = field(default_factory=dict)
    inputs: Dict[str, Tuple[str, str]] = field(default_factory=dict)


# json.dumps(obj, sort_keys=True, default=str) builds this encoder anew on every call (~25% of a digest)
_CANONICAL = json.JSONEncoder(sort_keys=True, default=str)


def digest(obj: Any) -> str:
    """16 hex digits of sha256 over a canonical JSON of obj (json.dumps(obj, sort_keys=True, default=str))."""
    return hashlib.sha256(_CANONICAL.encode(obj).encode()).hexdigest()[:16]


def input_candidates(payload: Dict[str, Any]) -> List[str]:
    """The strings of a payload that may name an external input: hub references (hf://...) and strings
    that look like filesystem paths (absolute, or holding a '/'), without folder placeholders or URLs.
    key_facts keeps the local ones that exist."""
    found: List[str] = []

    def note(s: str) -> str:
        if s.startswith(HUB_PREFIX):
            found.append(s)
        elif (os.path.isabs(s) or "/" in s) and "://" not in s and not layout.PLACEHOLDER.search(s) \
                and "\n" not in s and len(s) < 4096:
            found.append(s)
        return s

    layout.map_strings(payload, note)
    return list(dict.fromkeys(found))


def code_paths(plan: Plan, stage: StagePlan, point: int) -> List[str]:
    """The `pipeline.code` paths a stage point can import: those whose import name the kind names
    (Kind.code_modules: kind=python, its target's package), or all of them."""
    from launcher.plan.snapshot import import_name

    modules = kinds.get(stage.kind).code_modules(stage.payloads[point])
    return [p for p in plan.code if modules is None or import_name(p) in modules]


def read_stages(plan: Plan, stage: StagePlan, point: int) -> List[str]:
    """The stages whose outputs the point reads (Kind.reads_from), expanded names resolved (a minhash
    stage's name is its last part: Plan.aliases)."""
    names = kinds.get(stage.kind).reads_from(stage.payloads[point], [d.parent for d in stage.deps])
    return [n for n in dict.fromkeys(plan.aliases.get(n, n) for n in names) if n in plan.stages and n != stage.name]


def parts(plan: Plan, stage: StagePlan, point: int, facts: Facts,
          memo: Optional[Dict[Any, Any]] = None) -> Dict[str, Tuple[str, Any]]:
    """{part: (digest, what it covers)} of one stage point's key, in a fixed order. Needs the keys of
    the stages it reads (assign computes them in topological order). `memo` (a dict the caller keeps
    while the plan lives) shares the parts that only the point's payload and resources decide among
    the points whose payload is one object (launcher/config/incremental.py: a sweep that does not
    touch this stage), so a 10,000-point sweep digests such a stage's payload once."""
    payload = stage.payloads[point]
    resources = stage.point_resources(point)
    shape, shape_text = _shape(resources, memo)
    ident = (stage.name, id(payload), shape_text)
    own = memo.get(ident) if memo is not None else None
    if own is None:
        own = _own_parts(plan, stage, point, facts, shape)
        if memo is not None:
            memo[ident] = own
    reads = {n: plan.stages[n].keys[point] for n in own["reads"]}
    return {"config": own["config"], "inputs_of_stages": (digest(reads), reads), "code": own["code"],
            "node_code": (facts.node_code, "jobs/ and templates/ (the launcher's node side)"),
            "environment": facts.environments.get(stage.name, ("", "none")),
            "external_inputs": own["external_inputs"]}


def _shape(resources: Dict[str, Any], memo: Optional[Dict[Any, Any]]) -> Tuple[Dict[str, Any], str]:
    """The resources that shape the computation (KEY_RESOURCES), and their JSON; once per resources
    object while `memo` lives (the points of a resource group share one)."""
    if memo is not None and ("shape", id(resources)) in memo:
        return memo["shape", id(resources)][1:]
    shape = {k: resources.get(k) for k in KEY_RESOURCES}
    found = (resources, shape, json.dumps(shape, sort_keys=True, default=str))  # resources kept: its id stays its
    if memo is not None:
        memo["shape", id(resources)] = found
    return found[1:]


def _own_parts(plan: Plan, stage: StagePlan, point: int, facts: Facts, shape: Dict[str, Any]) -> Dict[str, Any]:
    """The parts of a point's key that its payload and resources decide, and the stages it reads."""
    payload = stage.payloads[point]
    config = {"kind": stage.kind, "tasks": stage.tasks_per_point, "resources": shape, "payload": payload}
    code = {p: facts.code.get(p, "missing") for p in code_paths(plan, stage, point)}
    inputs = {s: facts.inputs[s] for s in input_candidates(payload) if s in facts.inputs}
    return {"config": (digest(config), config), "code": (digest(code), code),
            "reads": read_stages(plan, stage, point),
            "external_inputs": (digest({s: d for s, (d, _) in inputs.items()}), {s: w for s, (_, w) in inputs.items()})}


def key_of(point_parts: Dict[str, Tuple[str, Any]]) -> str:
    """The key: a digest of the parts' digests."""
    return digest({name: d for name, (d, _) in point_parts.items()})


def shares(plan: Plan, stage: StagePlan) -> bool:
    """Whether the stage's points may share tasks: its kind allows it (not a server, not a publication),
    the stage does not say `cache: false` (its output is not determined by its key: a timing, a live
    endpoint's answers) and it is no server's client (a client's point meets its own point's server)."""
    if not kinds.get(stage.kind).shares_points or not stage.cache:
        return False
    return not any(kinds.get(plan.stages[d.parent].kind).provides_endpoint for d in stage.deps)


def assign(plan: Plan, facts: Facts) -> None:
    """Set every stage's per-point keys and shared points (StagePlan.keys, .shared), in topological
    order, then make every aftercorr edge whose child points map to parent points of other indices wait
    on the whole parent array (afterok; Dep.note "shared"): Slurm pairs array indices, and a shared
    point's parent task has another index. Modifies the plan in place; reads no file."""
    memo: Dict[Any, Any] = {}
    for stage in plan.stages.values():
        stage.keys = [key_of(parts(plan, stage, p, facts, memo)) for p in range(stage.points)]
        first: Dict[str, int] = {}
        shared = [first.setdefault(k, p) for p, k in enumerate(stage.keys)] if shares(plan, stage) else []
        stage.shared = shared if shared != list(range(stage.points)) else []
    for stage in plan.stages.values():
        running = sorted({stage.point_of(p) for p in range(stage.points)})
        for d in stage.deps:
            parent = plan.stages[d.parent]
            if d.kind == "aftercorr" and any(parent.point_of(p) != p for p in running):
                d.kind, d.note = "afterok", "shared"


def mapping(stage: StagePlan) -> Optional[str]:
    """How a stage's points map to the points that compute them, for `launcher plan`: "0,1<-0 2,3<-2"
    (points 0 and 1 read point 0's output, ...); None when every point computes its own."""
    if not stage.shared:
        return None
    groups: Dict[int, List[int]] = {}
    for p, q in enumerate(stage.shared):
        groups.setdefault(q, []).append(p)
    from launcher.sbatch.arrays import ranges

    return " ".join(f"{ranges(ps)}<-{q}" for q, ps in groups.items())


def explain(plan: Plan, facts: Facts, name: str) -> List[str]:
    """`launcher plan --explain-key STAGE`: per point, its key and each part's digest and contents."""
    stage = plan.stages[name]
    lines = []
    for p in range(stage.points):
        point_parts = parts(plan, stage, p, facts)
        computed = stage.point_of(p)
        lines.append(f"{name} point {p} ({' '.join(plan.points[p]) or 'no overrides'}): key {stage.keys[p]}"
                     + (f" (computed by point {computed})" if computed != p else ""))
        for part, (d, what) in point_parts.items():
            text = json.dumps(what, sort_keys=True, default=str) if not isinstance(what, str) else what
            lines.append(f"  {part:<17} {d or '-':<16}  {text if len(text) <= 300 else text[:297] + '...'}")
    return lines
