"""The sbatch options a stage may ask for beyond the core resources: typed fields (gres, mem_per_cpu_gb,
reservation, ...) and the checked pass-through map `resources.sbatch`. Pure functions, no Slurm call:
each value is checked in the form sbatch(1) takes, before anything is written; the cluster-dependent
checks (a GRES type, a reservation, node names) are the Slurm backend's (launcher/slurm/checks.py)."""
from __future__ import annotations

import difflib
import re
from typing import Any, Dict, List, Optional, Tuple

from launcher.sbatch.values import mem_problem

# Typed fields that a profile may default (schema.ResourceDefaults); `sbatch` merges key by key.
DEFAULTABLE = ("gres", "gpus_per_task", "cpus_per_gpu", "mem_per_cpu_gb", "mem_per_gpu_gb", "reservation", "nodelist",
               "exclude", "licenses", "mail_type", "mail_user", "comment", "begin", "deadline", "hint", "network")
# The keys resolve() adds to a stage's resources, beyond the core ones every plan had before them.
LATER_KEYS = frozenset(DEFAULTABLE) | {"sbatch", "gpu_type"}
MEMORY_FIELDS = ("mem_gb", "mem_per_cpu_gb", "mem_per_gpu_gb")  # sbatch: --mem, --mem-per-cpu, --mem-per-gpu

# Every long option of sbatch(1), Slurm 23.02 man page (https://slurm.schedmd.com/sbatch.html, OPTIONS),
# without the leading "--".
SBATCH_LONG_OPTIONS = frozenset("""
account acctg-freq array batch bb bbf begin chdir cluster-constraint clusters comment constraint container
container-id contiguous core-spec cores-per-socket cpu-freq cpus-per-gpu cpus-per-task deadline delay-boot
dependency distribution error exclude exclusive export export-file extra extra-node-info get-user-env gid
gpu-bind gpu-freq gpus gpus-per-node gpus-per-socket gpus-per-task gres gres-flags help hint hold ignore-pbs
input job-name kill-on-invalid-dep licenses mail-type mail-user mcs-label mem mem-bind mem-per-cpu mem-per-gpu
mincpus network nice no-kill no-requeue nodefile nodelist nodes ntasks ntasks-per-core ntasks-per-gpu
ntasks-per-node ntasks-per-socket open-mode output overcommit oversubscribe parsable partition power prefer
priority profile propagate qos quiet reboot requeue reservation signal sockets-per-node spread-job switches
test-only thread-spec threads-per-core time time-min tmp tres-per-task uid usage use-min-nodes verbose version
wait wait-all-nodes wckey wrap
""".split())

# Options the launcher sets itself (render.py, submit.py): a value here would break arrays, chaining,
# log paths, requeue or the submission itself.
OWNED = {
    "array": "the launcher makes each stage one array job (tasks, throttle)",
    "dependency": "the launcher chains stages with dependencies (after)",
    "output": "task logs go to <run>/stages/<stage>/logs, where `launcher logs` reads them",
    "error": "task logs go to <run>/stages/<stage>/logs, where `launcher logs` reads them",
    "open-mode": "logs are appended across requeues",
    "job-name": "the job name is <run id>.<stage> (status, cancel and singleton rely on it)",
    "parsable": "the launcher submits with --parsable itself",
    "signal": "the stop signal is requeue.signal / requeue.signal_delay_s",
    "requeue": "requeue is requeue.max",
    "no-requeue": "requeue is requeue.max (0: no requeue)",
    "wrap": "the launcher writes the batch script",
    "wait": "the launcher submits and returns; --wait would block on each stage",
    "test-only": "nothing would be submitted",
    "hold": "a held job never starts and its dependants wait forever",
    "help": "not a job option", "usage": "not a job option", "version": "not a job option",
    "quiet": "not a job option", "verbose": "not a job option",
}
# Options that have a typed field: the field is checked against the cluster, the map entry would not be.
TYPED = {"partition": "partition", "time": "time", "nodes": "nodes", "ntasks-per-node": "ntasks_per_node",
         "cpus-per-task": "cpus_per_task", "gpus-per-node": "gpus_per_node", "mem": "mem_gb", "account": "account",
         "qos": "qos", "constraint": "constraint", "exclusive": "exclusive",
         **{f.replace("_gb", "").replace("_", "-"): f for f in DEFAULTABLE}}

MAIL_TYPES = ("NONE", "BEGIN", "END", "FAIL", "REQUEUE", "ALL", "INVALID_DEPEND", "STAGE_OUT", "TIME_LIMIT",
              "TIME_LIMIT_90", "TIME_LIMIT_80", "TIME_LIMIT_50", "ARRAY_TASKS")  # sbatch(1) --mail-type
HINTS = ("compute_bound", "memory_bound", "multithread", "nomultithread")  # sbatch(1) --hint (besides help)

_NAME = r"[A-Za-z0-9_.+-]+"
_GRES_NAME = re.compile(rf"^{_NAME}$")
_COUNT = re.compile(r"^\d+[KMGT]?$")
_GPUS = re.compile(rf"^(?:(?P<type>{_NAME}):)?(?P<count>\d+)$")
_HOSTLIST = re.compile(r"^[A-Za-z0-9_.\-\[\],]+$")
# sbatch(1) --mail-user: "a full email address or a user name"; MailProg gets the text as it is, so a
# comma-separated list reaches every address where the site's mailer takes one.
_MAIL_USER = re.compile(r"^[A-Za-z0-9_.+-]+(?:@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)?"
                        r"(?:,[A-Za-z0-9_.+-]+(?:@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*)?)*$")
_LICENSES = re.compile(rf"^{_NAME}(?:@{_NAME})?(?::\d+)?(?:[,|]{_NAME}(?:@{_NAME})?(?::\d+)?)*$")
# sbatch(1) --begin: HH:MM[:SS][AM|PM], MMDD[YY], MM/DD[/YY], MM.DD[.YY], YYYY-MM-DD[THH:MM[:SS]],
# now[+count[seconds|minutes|hours|days|weeks]], and the names midnight, noon, elevenses, fika, teatime,
# today, tomorrow (a time of day may follow a date: "MM/DD HH:MM" is not accepted, "MM/DDTHH:MM" is).
_TOD = r"\d{1,2}:\d{2}(?::\d{2})?(?:AM|PM|am|pm)?"
_DATE = r"(?:\d{4}-\d{2}-\d{2}|\d{2}/\d{2}(?:/\d{2})?|\d{2}\.\d{2}(?:\.\d{2})?|\d{4}(?:\d{2})?)"
_BEGIN = re.compile(
    rf"^(?:{_TOD}|{_DATE}(?:T{_TOD})?|now(?:\+\d+(?:seconds|minutes|hours|days|weeks|second|minute|hour|day|week"
    rf"|sec|min|s|m|h|d|w)?)?|midnight|noon|elevenses|fika|teatime|today|tomorrow)$", re.I)


def gpus_per_node(value: Any) -> Tuple[Optional[str], int]:
    """resources.gpus_per_node → (GPU type or None, count per node). An int, or "type:count" /
    "count" as sbatch --gpus-per-node takes it. ValueError if it is neither, or negative."""
    if isinstance(value, bool):
        raise ValueError(f"must be a GPU count or 'type:count' (e.g. 8 or 'a100:8'), got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"must be >= 0, got {value}")
        return None, value
    m = _GPUS.match(str(value).strip())
    if not m:
        raise ValueError(f"must be a GPU count or 'type:count' as sbatch --gpus-per-node takes it "
                         f"(e.g. 8 or 'a100:8'), got {value!r}")
    return m.group("type"), int(m.group("count"))


def gpu_count(value: Any) -> int:
    """resources.gpus_per_node's count per node; 0 when it does not parse (the resources checks report it)."""
    try:
        return gpus_per_node(value)[1]
    except ValueError:
        return 0


def node_gpus(r: Dict[str, Any]) -> int:
    """The GPUs per node a stage asks for (`r`: its resources, resolved or not), in whichever form it asks:
    the largest of
      - gpus_per_node's count (sbatch --gpus-per-node: "the number of GPUs required for the job on each
        node included in the job's resource allocation");
      - the `gpu` items of gres, summed (sbatch --gres: "a comma-delimited list of generic consumable
        resources per node"; gpu:a100:8 is 8 per node);
      - gpus_per_task x ntasks_per_node (sbatch --gpus-per-task: "the number of GPUs required for the job
        on each task"; the launcher always gives --ntasks-per-node, so a node runs that many tasks).
    Source: sbatch(1), Slurm 23.02 (https://slurm.schedmd.com/sbatch.html). The largest, not the sum: Slurm
    allocates what satisfies every request (gres gpu with gpus_per_node is refused: resource_problems), so
    this is what each node of the allocation has at least. A value that does not parse counts 0 (the
    resources checks report it)."""
    per_task = r.get("gpus_per_task") or 0
    tasks = r.get("ntasks_per_node") or 1
    return max(gpu_count(r.get("gpus_per_node", 0)), _gres_gpus(r),
               per_task * tasks if isinstance(per_task, int) and isinstance(tasks, int) else 0)


def gpu_request(r: Dict[str, Any]) -> str:
    """Which resources key gives a stage its GPUs per node (`node_gpus`), for messages: "resources.gres is
    gpu:a100:4", "resources.gpus_per_node is 2", "resources.gpus_per_task is 1 x ntasks_per_node 4", or,
    without GPUs, "resources.gpus_per_node is 0" (no gres or gpus_per_task either)."""
    n = node_gpus(r)
    per_task, tasks = r.get("gpus_per_task") or 0, r.get("ntasks_per_node") or 1
    if n and gpu_count(r.get("gpus_per_node", 0)) != n and _gres_gpus(r) == n:
        return f"resources.gres is {r['gres']}"
    if n and gpu_count(r.get("gpus_per_node", 0)) != n and isinstance(per_task, int) and per_task * tasks == n:
        return f"resources.gpus_per_task is {per_task} x ntasks_per_node {tasks}"
    return f"resources.gpus_per_node is {r.get('gpus_per_node') or 0}"


def parse_gres(value: str) -> List[Tuple[str, Optional[str], int]]:
    """sbatch --gres ('gpu:a100:8,shard:2', 'gpu') → [(name, type or None, count per node)]. A missing
    count is 1; of two parts the second is a count when it is one ('gpu:2'), else a type ('gpu:a100')
    (sbatch(1) --gres: name[[:type]:count]). ValueError says which item is wrong."""
    out = []
    for item in str(value).split(","):
        parts = item.strip().split(":")
        if len(parts) == 2 and _COUNT.match(parts[1]):
            parts = [parts[0], None, parts[1]]
        name, gtype, count_text = (parts + [None, None])[:3] if len(parts) <= 3 else (None, None, None)
        if not name or not _GRES_NAME.match(name) or gtype == "" or (gtype and not _GRES_NAME.match(gtype)) \
                or (count_text is not None and not _COUNT.match(count_text)):
            raise ValueError(f"{item!r} is not name[:type][:count] (sbatch --gres, e.g. gpu:a100:8 or gpu:2)")
        count_text = count_text or "1"
        mult = {"K": 1024, "M": 1024 ** 2, "G": 1024 ** 3, "T": 1024 ** 4}
        count = int(count_text[:-1]) * mult[count_text[-1]] if count_text[-1] in mult else int(count_text)
        if count < 1:
            raise ValueError(f"{item!r} asks for 0 (a count must be at least 1)")
        out.append((name, gtype, count))
    return out


def resolve(resources: Dict[str, Any], defaults: Optional[Dict[str, Any]]) -> Tuple[Dict[str, Any], List[Tuple[str, str]]]:
    """A stage's resources as the plan and the renderer read them, and the problems found doing so
    ((key under resources, message)): the profile's defaults (cluster.resources) where the stage gives
    null, the `sbatch` maps merged (the stage's keys win), a memory default left out when the stage
    gives another memory field (they exclude each other: the stage's choice wins), and gpus_per_node
    split into a count (int) and `gpu_type` (None: any). Idempotent: a resolved dict comes back equal."""
    out = dict(resources)
    defaults = defaults or {}
    stage_mem = any(resources.get(k) is not None for k in MEMORY_FIELDS)
    for k in DEFAULTABLE:
        if out.get(k) is None and defaults.get(k) is not None:
            if k in MEMORY_FIELDS and stage_mem:
                continue
            out[k] = defaults[k]
    out["sbatch"] = {**(defaults.get("sbatch") or {}), **(resources.get("sbatch") or {})}
    problems: List[Tuple[str, str]] = []
    gtype = out.get("gpu_type")
    try:
        parsed_type, count = gpus_per_node(out.get("gpus_per_node", 0))
    except ValueError as e:
        problems.append(("gpus_per_node", str(e)))
        parsed_type, count = None, 0
    else:
        if parsed_type is not None and count == 0:
            problems.append(("gpus_per_node", f"{out['gpus_per_node']!r} asks for 0 GPUs of a type: give a count >= 1"))
    out["gpus_per_node"], out["gpu_type"] = count, parsed_type or gtype
    return out, problems


def option_name(key: str) -> str:
    """A map key as sbatch spells the option ("mail_type" and "--mail-type" → "mail-type")."""
    return str(key).lstrip("-").replace("_", "-")


def passthrough_problem(key: str, value: Any) -> Optional[str]:
    """Why `sbatch: {key: value}` cannot be passed to sbatch (None if it can)."""
    name = option_name(key)
    if name not in SBATCH_LONG_OPTIONS:
        near = difflib.get_close_matches(name, sorted(SBATCH_LONG_OPTIONS), n=1, cutoff=0.6)
        return (f"'{key}' is not an sbatch option (sbatch(1) long options, without '--')"
                + (f"; did you mean '{near[0]}'?" if near else ""))
    if name in OWNED:
        return f"--{name} is the launcher's own: {OWNED[name]}"
    if name in TYPED:
        return f"--{name} has a typed field that is checked against the cluster: use resources.{TYPED[name]}"
    if value is None or value is False or value == "":
        return f"--{name} needs a value (true for an option without one), got {value!r}"
    if isinstance(value, (dict, list)):
        return f"--{name} takes one value (a string or number), got {type(value).__name__}"
    if _control(str(value)):
        return f"--{name}: the value contains a control character (a newline ends an #SBATCH line)"
    return None


def _control(text: str) -> bool:
    return any(ord(c) < 32 or ord(c) == 127 for c in text)


def resource_problems(r: Dict[str, Any]) -> List[Tuple[str, str]]:
    """(key under resources, message) for each value of the sbatch-option fields that sbatch would
    refuse or misread; `r` is a stage's resources after resolve()."""
    out: List[Tuple[str, str]] = []
    for k in DEFAULTABLE:  # every value goes on an #SBATCH line
        if isinstance(r.get(k), str) and _control(r[k]):
            out.append((k, "contains a control character (a newline ends an #SBATCH line)"))
    gcount = r["gpus_per_node"]
    if r.get("gres"):
        try:
            items = parse_gres(r["gres"])
        except ValueError as e:
            out.append(("gres", str(e)))
        else:
            if gcount and any(name == "gpu" for name, _, _ in items):
                out.append(("gres", f"{r['gres']!r} asks for GPUs and so does gpus_per_node ({r['gpus_per_node']}): "
                                    f"give the GPUs once (Slurm would add both requests)"))
    for k in ("gpus_per_task", "cpus_per_gpu"):
        if r.get(k) is not None and r[k] < 1:
            out.append((k, f"must be >= 1 or null, got {r[k]}"))
    mems = [k for k in MEMORY_FIELDS if r.get(k) is not None]
    if len(mems) > 1:
        out.append((mems[1], f"{' and '.join(mems)} are mutually exclusive (sbatch: --mem, --mem-per-cpu and "
                             f"--mem-per-gpu exclude each other): give one"))
    for k in ("mem_per_cpu_gb", "mem_per_gpu_gb"):
        if r.get(k) is not None and (msg := mem_problem(r[k])):
            out.append((k, msg))
    if r.get("mem_per_gpu_gb") is not None and not (gcount or r.get("gpus_per_task") or _gres_gpus(r)):
        out.append(("mem_per_gpu_gb", "the stage asks for no GPU (gpus_per_node, gpus_per_task or gres gpu)"))
    if r.get("cpus_per_gpu") is not None and not (gcount or r.get("gpus_per_task") or _gres_gpus(r)):
        out.append(("cpus_per_gpu", "the stage asks for no GPU (gpus_per_node, gpus_per_task or gres gpu)"))
    return out + _format_problems(r)


def _format_problems(r: Dict[str, Any]) -> List[Tuple[str, str]]:
    """The string-valued options, each in the form sbatch(1) takes."""
    out: List[Tuple[str, str]] = []
    for k in ("nodelist", "exclude"):
        if r.get(k) and not _HOSTLIST.match(r[k]):
            out.append((k, f"{r[k]!r} is not a Slurm hostlist (e.g. node[01-04],gpu7)"))
    if r.get("licenses") and not _LICENSES.match(r["licenses"]):
        out.append(("licenses", f"{r['licenses']!r} is not name[:count][,name[:count]] (sbatch --licenses)"))
    if r.get("mail_type"):
        wrong = [t for t in str(r["mail_type"]).split(",") if t.strip().upper() not in MAIL_TYPES]
        if wrong:
            out.append(("mail_type", f"unknown mail type {', '.join(wrong)} (sbatch --mail-type: "
                                     f"{', '.join(MAIL_TYPES)})"))
    if r.get("mail_user") is not None and not _MAIL_USER.match(str(r["mail_user"])):
        out.append(("mail_user", f"{r['mail_user']!r} is not a user name or address (sbatch --mail-user, e.g. "
                                 f"alice or ops@example.org)"))
    if r.get("hint") and r["hint"] not in HINTS:
        out.append(("hint", f"unknown hint {r['hint']!r} (sbatch --hint: {', '.join(HINTS)})"))
    for k in ("begin", "deadline"):
        if r.get(k) and not _BEGIN.match(str(r[k]).strip()):
            out.append((k, f"{r[k]!r} is not a Slurm time of day or date (e.g. 16:00, now+1hour, tomorrow, "
                           f"2026-12-01T18:00; sbatch(1) --{k}, which takes --begin's formats)"))
    for k in ("reservation", "network"):
        if r.get(k) is not None and (not r[k] or re.search(r"\s", r[k])):
            out.append((k, f"{r[k]!r}: must be a name without spaces"))
    for key, value in (r.get("sbatch") or {}).items():
        if msg := passthrough_problem(key, value):
            out.append((f"sbatch.{key}", msg))
    return out


def _gres_gpus(r: Dict[str, Any]) -> int:
    try:
        return sum(c for n, _, c in parse_gres(r["gres"]) if n == "gpu") if r.get("gres") else 0
    except ValueError:
        return 0


def submitit_parameters(r: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(keyword arguments of submitit's _make_sbatch_string, additional_parameters) for the sbatch-option
    fields of a checked stage: submitit's own parameters where it has them (gres, gpus_per_task,
    mem_per_cpu, mem_per_gpu, comment, exclude, nodelist, mail_type, mail_user), the
    others and the pass-through map as additional parameters (submitit shell-quotes every value)."""
    from launcher.sbatch.values import mem_flag

    kw = {k: r.get(k) for k in ("gres", "gpus_per_task", "comment", "exclude", "nodelist", "mail_type", "mail_user")}
    kw["mem_per_cpu"] = mem_flag(r["mem_per_cpu_gb"]) if r.get("mem_per_cpu_gb") is not None else None
    kw["mem_per_gpu"] = mem_flag(r["mem_per_gpu_gb"]) if r.get("mem_per_gpu_gb") is not None else None
    # cpus_per_gpu goes as a plain option: submitit warns (wrongly) that it needs gpus_per_task, while
    # sbatch(1) takes it with any GPU request (--gpus, --gpus-per-node, --gpus-per-task, --gres).
    extra = {k.replace("_", "-"): r[k] for k in ("cpus_per_gpu", "reservation", "licenses", "begin", "deadline", "hint",
                                                 "network") if r.get(k) is not None}
    for key, value in (r.get("sbatch") or {}).items():
        extra[option_name(key)] = True if value is True else value
    return {k: v for k, v in kw.items() if v is not None}, extra
