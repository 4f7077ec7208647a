"""hydra.launcher.* -> the keys of the one stage the plugin submits: resources with the stage's own
names, throttle, requeue, env, and hydra-submitit-launcher's names as aliases. Pure: plain values in,
(settings, where each came from, problems) out."""
from __future__ import annotations

from typing import Any, Dict, List, Tuple

# launcher/config/schema.py Resources, field for field (tests/unit/test_hydra_app_plan.py checks it).
RESOURCES = ("partition", "time", "nodes", "ntasks_per_node", "cpus_per_task", "gpus_per_node", "mem_gb", "account",
             "qos", "constraint", "exclusive", "gres", "gpus_per_task", "cpus_per_gpu", "mem_per_cpu_gb",
             "mem_per_gpu_gb", "reservation", "nodelist", "exclude", "licenses", "mail_type", "mail_user", "comment",
             "begin", "deadline", "hint", "network", "sbatch")
REQUEUE = ("max", "signal", "signal_delay_s", "term_grace_s")
# hydra-submitit-launcher's name -> the stage key it sets
ALIASES = {"timeout_min": "resources.time", "tasks_per_node": "resources.ntasks_per_node",
           "array_parallelism": "throttle", "max_num_timeout": "requeue.max",
           "signal_delay_s": "requeue.signal_delay_s", "additional_parameters": "resources.sbatch"}


def _unset(value: Any) -> bool:
    return value is None or value == {}


def stage_settings(params: Dict[str, Any]) -> Tuple[Dict[str, Any], Dict[str, str], List[Tuple[str, str]]]:
    """params: hydra.launcher as plain values. Returns (settings: {"resources": {...}, "requeue": {...},
    "throttle"?, "env"?} holding only what is set; origin: {stage key ("resources.time"): the
    hydra.launcher key it came from}; problems: [(hydra.launcher key, message)])."""
    settings: Dict[str, Any] = {"resources": {}, "requeue": {}}
    origin: Dict[str, str] = {}
    problems: List[Tuple[str, str]] = []

    def put(target: str, value: Any, source: str) -> None:
        section, _, key = target.rpartition(".")
        node = settings[section] if section else settings
        if target in origin:
            problems.append((f"hydra.launcher.{source}", f"sets {target} as {origin[target]} does: give one of them"))
            return
        node[key] = value
        origin[target] = f"hydra.launcher.{source}"

    for name in RESOURCES:
        if not _unset(params.get(name)):
            put(f"resources.{name}", params[name], name)
    for name in REQUEUE:
        if not _unset((params.get("requeue") or {}).get(name)):
            put(f"requeue.{name}", params["requeue"][name], f"requeue.{name}")
    for name in ("throttle", "env"):
        if not _unset(params.get(name)):
            put(name, params[name], name)
    for alias, target in ALIASES.items():
        value = params.get(alias)
        if _unset(value):
            continue
        if alias == "timeout_min":
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                problems.append((f"hydra.launcher.{alias}", f"must be a whole number of minutes >= 1, got {value!r}"))
                continue
            value = str(value)  # a Slurm time in minutes
        put(target, value, alias)
    return settings, origin, problems


def launcher_key(stage_key: str, origin: Dict[str, str]) -> str | None:
    """The hydra.launcher key a stage key (relative: "resources.time", "resources.sbatch.mail-user")
    came from, or None."""
    parts = stage_key.split(".")
    for n in range(len(parts), 0, -1):
        found = origin.get(".".join(parts[:n]))
        if found:
            return ".".join([found, *parts[n:]])
    return None
