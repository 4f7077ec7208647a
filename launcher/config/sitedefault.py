"""The site default: which cluster profile a command uses when `cluster=` is not given.

In order: `cluster=` among the overrides; $LAUNCHER_CLUSTER; `cluster:` in the user config file
($LAUNCHER_CONFIG_FILE, else $XDG_CONFIG_HOME/launcher/config.yaml, else ~/.config/launcher/config.yaml);
else the root config's default, `local`. A default that comes from the environment or the file is put
among the overrides as `cluster=<name>` (first), so the run directory records it and `resume` composes
the same profile whatever the shell says later.

When the choice falls to `local` only by default on a host where Slurm answers (`sinfo` exits 0 within
PROBE_TIMEOUT_S), `run` refuses and `plan` warns: cluster=local runs every task on this machine, which on
a Slurm login node is the shared machine everyone logs in to, while `run` returns as if the jobs were
queued. One word (cluster=local) says it was meant. $LAUNCHER_SLURM_PROBE=0 skips the probe (tests).
Standard library (and PyYAML for the file) only."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from launcher.errors import UsageError

ENV = "LAUNCHER_CLUSTER"
FILE_ENV = "LAUNCHER_CONFIG_FILE"
PROBE_ENV = "LAUNCHER_SLURM_PROBE"
PROBE_TIMEOUT_S = 2.0
FILE_KEYS = ("cluster",)


def config_file() -> Path:
    if os.environ.get(FILE_ENV):
        return Path(os.environ[FILE_ENV])
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "launcher" / "config.yaml"


def names_cluster(overrides: Sequence[str]) -> bool:
    """Whether the overrides choose the cluster profile (cluster=..., +cluster=..., a sweep over it)."""
    return any(o.split("=", 1)[0].lstrip("+~") == "cluster" for o in overrides if "=" in o)


def default_cluster() -> Tuple[Optional[str], Optional[str]]:
    """(profile, where it was said) from $LAUNCHER_CLUSTER or the user config file; (None, None): neither."""
    if os.environ.get(ENV, "").strip():
        return os.environ[ENV].strip(), f"${ENV}"
    path = config_file()
    if not path.is_file():
        return None, None
    import yaml

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise UsageError(f"cannot read {path}: {e}") from e
    unknown = sorted(set(data) - set(FILE_KEYS)) if isinstance(data, dict) else ["(not a mapping)"]
    if unknown:
        raise UsageError(f"{path}: unknown key(s) {', '.join(map(str, unknown))} (it may set: {', '.join(FILE_KEYS)})")
    name = data.get("cluster")
    return (str(name), str(path)) if name else (None, None)


def slurm_answers(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether this host is a Slurm client: `sinfo` is on PATH and exits 0 within `timeout`."""
    if os.environ.get(PROBE_ENV) == "0" or shutil.which("sinfo") is None:
        return False
    try:
        return subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, timeout=timeout).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def with_cluster(overrides: Sequence[str], refuse_local: bool) -> List[str]:
    """The overrides with the site's cluster profile first when they name none (see the module's doc).
    `refuse_local` (run): UsageError where the choice would fall to `local` by default on a Slurm host;
    otherwise (plan) a warning on stderr."""
    if names_cluster(overrides):
        return list(overrides)
    name, source = default_cluster()
    if name:
        from launcher.config.compose import available_profiles

        if name not in available_profiles():
            import difflib

            near = difflib.get_close_matches(name, available_profiles(), n=1)
            raise UsageError(f"{source} names cluster profile '{name}', which does not exist"
                             + (f"; did you mean '{near[0]}'?" if near else "")
                             + f" (profiles: {', '.join(available_profiles())}; `launcher configs cluster`)")
        return [f"cluster={name}", *overrides]
    if slurm_answers():
        why = ("this host answers Slurm (sinfo), but no cluster= is given and no site default is set, so it would "
               "be cluster=local: every task on this machine")
        fix = (f"name a profile (cluster=<name>; `launcher configs cluster`), set ${ENV} or `cluster: <name>` in "
               f"{config_file()}, or say cluster=local if this machine is meant")
        if refuse_local:
            raise UsageError(f"{why}. Nothing was submitted: {fix}")
        print(f"warning: {why}; {fix}", file=sys.stderr)
    return list(overrides)
