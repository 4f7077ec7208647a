"""The team `cache_dir` of a cluster profile (`cache_dir: /shared/cache`): where the runs of several
people and run roots find each other's completed (or in-flight) content keys (docs/content-keys.md).

It holds links, not copies: every run submitted with the profile links itself there
(`<cache_dir>/<run id>` -> its run directory), and the cache lookup (launcher/run/cache.py) reads the runs
under the run root and then those under cache_dir by the same rules (completed markers; in flight).
Outputs stay in the run that computed them, read-only to the others: nothing has to run after a job
ends to publish it, and a run root may also simply be the cache_dir itself. A link whose run was
removed (gc, rm) is skipped, so that key is computed again.

Preflight checks that cache_dir is a folder this user can write (a probe file written and removed).
Whether compute nodes see it is not checked (an srun probe would cost every run a job): the run
directories the links name must be on the shared filesystem, as every run directory is.
Login node only."""
from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import List, Optional

from launcher.errors import ConfigError

KEY = "cluster.cache_dir"


def problems(cluster: dict) -> List[ConfigError]:
    """cache_dir is an absolute path to an existing folder this user can create files in."""
    where = cluster.get("cache_dir")
    if not where:
        return []
    path = Path(str(where))
    if not path.is_absolute():
        return [ConfigError(f"{where!r} is not an absolute path; every member's runs must name the same folder",
                            key=KEY)]
    if not path.is_dir():
        return [ConfigError(f"{where} does not exist or is not a folder (create it, shared by the team)", key=KEY)]
    probe = path / f".probe-{socket.gethostname()}-{os.getpid()}"
    try:
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        return [ConfigError(f"{where} is not writable by this user ({e.strerror or e}): each run links itself "
                            f"there; make it group-writable for the team", key=KEY)]
    return []


def usable(cluster: dict) -> Optional[Path]:
    """The cache_dir to lock, look up and publish in: set, an absolute path to an existing folder this
    user may write (else preflight says why, and nothing is submitted)."""
    where = cluster.get("cache_dir")
    path = Path(str(where)) if where else None
    return path if path and path.is_absolute() and path.is_dir() and os.access(path, os.W_OK) else None


def link(cluster: dict, run_dir: Path) -> None:
    """Publish the run: `<cache_dir>/<run id>` -> the run directory (under the cache lock)."""
    where = usable(cluster)
    if where is None or os.path.realpath(where) == os.path.realpath(run_dir.parent):
        return  # no team cache, or the runs are written in it already
    (where / run_dir.name).symlink_to(run_dir.resolve(), target_is_directory=True)
