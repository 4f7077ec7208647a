"""Your own configs, outside the repository: directories given with `--config-dir DIR` (repeatable) and in
$LAUNCHER_CONFIG_DIRS (os.pathsep-separated), in that order, are searched before the package's own
configs, with the layout of the package's:

    DIR/pipeline/<name>.yaml          pipeline=<name>
    DIR/data/<name>.yaml              data=<name>
    DIR/model/<name>.yaml             model=<name>
    DIR/cluster_profiles/<name>.yaml  cluster=<name> (typed by the Cluster schema, like cluster_profiles/)
    DIR/envs/<name>.txt               requirements of an environment with `build: <name>`

They go into Hydra's config search path (ConfigSearchPath) ahead of conf/; cluster profiles into the
ConfigStore after the package's. So an option of the same name in your directory shadows the
package's (`launcher configs GROUP` says so). Standard library only: read before Hydra is imported."""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Sequence

from launcher.errors import UsageError

ENV = "LAUNCHER_CONFIG_DIRS"
PROFILES = "cluster_profiles"
_chosen: Optional[List[Path]] = None  # set by the CLI (--config-dir) or resume (the run's own); None: $ENV


def from_env() -> List[Path]:
    return checked([d for d in os.environ.get(ENV, "").split(os.pathsep) if d.strip()], f"${ENV}")


def checked(dirs: Sequence, source: str) -> List[Path]:
    """Absolute, existing config directories, each once; UsageError naming `source` otherwise."""
    out: List[Path] = []
    for d in dirs:
        path = Path(os.path.expanduser(str(d))).resolve()
        if not path.is_dir():
            raise UsageError(f"config directory {str(d)!r} ({source}) does not exist or is not a directory")
        if (path / "config.yaml").exists():
            raise UsageError(f"config directory {path} ({source}) has a config.yaml: it would replace the launcher's "
                             f"root config; a config directory holds groups only (pipeline/, data/, model/, "
                             f"{PROFILES}/)")
        if (path / "cluster").is_dir():
            raise UsageError(f"config directory {path} ({source}) has a cluster/ folder: cluster profiles go in "
                             f"{path / PROFILES}/ (there they are typed by the Cluster schema)")
        if path not in out:
            out.append(path)
    return out


def use(dirs: Optional[List[Path]]) -> None:
    """Search exactly `dirs` (from `checked`; None: $LAUNCHER_CONFIG_DIRS again). Composition picks it up
    on its next call."""
    global _chosen
    _chosen = None if dirs is None else list(dirs)


def current() -> List[Path]:
    return list(_chosen) if _chosen is not None else from_env()
