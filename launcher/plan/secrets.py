"""Secrets never reach a file of the run. A secret is a variable the tasks get from the submitting
shell by name (cluster.secrets, a publish stage's token_env) or from the profile's secrets file; the
run directory (resolved config, plan, stage specs, sbatch scripts) holds every string of the composed
config, so a secret's VALUE anywhere in it, or an env map that gives a secret's NAME a value (the task
would see that value instead of the shell's), is refused before anything is written."""
from __future__ import annotations

import os
from typing import Any, Dict, Iterator, List, Sequence, Tuple

from launcher.errors import ConfigError

# A value this long is looked for inside longer strings (a token pasted into a command or a URL);
# shorter ones only as a whole string, so that a short value does not match everything.
SUBSTRING_MIN_CHARS = 8


def secrets_file_values(path: str | None) -> Dict[str, str]:
    """KEY=VALUE lines of the profile's secrets file (as jobs/task.py load_secrets reads them); {} if
    there is none or it cannot be read (preflight says why)."""
    out: Dict[str, str] = {}
    if not path:
        return out
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                key, sep, value = line.strip().partition("=")
                if sep and key and not key.startswith("#"):
                    out[key.strip()] = value.strip()
    except (OSError, UnicodeDecodeError):
        pass
    return out


def secret_names(cfg: Dict[str, Any]) -> Dict[str, str]:
    """{variable name: where it is declared a secret} for one composed config."""
    cl = cfg["cluster"]
    names = {n: f"cluster.secrets.{i}" for i, n in enumerate(cl.get("secrets") or [])}
    for n in secrets_file_values(cl.get("secrets_file")):
        names.setdefault(n, "cluster.secrets_file")
    from launcher import kinds

    for stage, st in (cfg["pipeline"].get("stages") or {}).items():
        if st.get("kind") in kinds.names():  # an unknown kind is reported by the plan
            for var, key in kinds.get(st["kind"]).secret_variables(stage, st).items():
                names.setdefault(var, key)
    return names


def _strings(node: Any, key: str) -> Iterator[Tuple[str, str]]:
    if isinstance(node, str):
        yield key, node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from _strings(v, f"{key}.{k}" if key else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _strings(v, f"{key}.{i}")


def _env_maps(cfg: Dict[str, Any]) -> Iterator[Tuple[str, Dict[str, Any]]]:
    cl = cfg["cluster"]
    yield "cluster.env", cl.get("env") or {}
    for n, e in (cl.get("environments") or {}).items():
        yield f"cluster.environments.{n}.env", (e or {}).get("env") or {}
    for s, st in (cfg["pipeline"].get("stages") or {}).items():
        yield f"pipeline.stages.{s}.env", st.get("env") or {}
    # compose.compose_each keeps it in the config: every stage's tasks get it (plan.build_plan)
    yield "hydra.job.env_set", ((cfg.get("hydra") or {}).get("job") or {}).get("env_set") or {}


def _stage_of(key: str) -> str | None:
    parts = key.split(".")
    return parts[2] if key.startswith("pipeline.stages.") and len(parts) > 2 else None


def check(configs: Sequence[Dict[str, Any]]) -> List[ConfigError]:
    """Every place in the composed configs (all sweep points) that holds a secret's value, and every
    env map entry named like a secret. The messages name the secret, never its value."""
    errors: List[ConfigError] = []
    seen = set()

    def bad(key: str, msg: str) -> None:
        if (key, msg) not in seen:
            seen.add((key, msg))
            errors.append(ConfigError(msg, stage=_stage_of(key), key=key))

    for cfg in configs:
        names = secret_names(cfg)
        for where, env in _env_maps(cfg):
            for k in env:
                if k in names:
                    bad(f"{where}.{k}", f"secret {k} ({names[k]}) must not have a value in config: it would be "
                                        f"written into the run's files and the task would see it instead of the "
                                        f"shell's; export it in your shell")
        values = {n: v for n, v in secrets_file_values(cfg["cluster"].get("secrets_file")).items() if v}
        values.update({n: os.environ[n] for n in names if os.environ.get(n)})
        if not values:
            continue
        for key, s in _strings(cfg, ""):
            for n, v in values.items():
                if s == v or (len(v) >= SUBSTRING_MIN_CHARS and v in s):
                    bad(key, f"holds the value of secret {n} ({names.get(n, 'cluster.secrets_file')}); every "
                             f"config string is written into the run directory. Refer to it by name ($"
                             f"{n} in a command; tasks get it from the submitting shell)")
    return errors
