"""What Hydra's composition answers from the config files alone, kept between commands, so that a
command whose config files did not change composes without starting Hydra (its plugin discovery,
config repository and defaults-list merge: ~0.5 s of a 200-point `launcher run` on 2 cores,
docs/sweep-scale.md).

Kept, per fingerprint of the inputs (`fingerprint`):
- the config composed from a set of config-group choices, before any value override (what
  `hydra.compose(config_name="config", overrides=<group choices>, return_hydra_config=True)` returns:
  unresolved, so no value of the environment or the clock is in it), pickled as OmegaConf pickles
  a DictConfig. Hydra writes two things of the process into it: the working directory
  (hydra.runtime.cwd), set again to this command's when it is read back, and the variables
  hydra.job.env_copy names (copied into hydra.job.env_set): a composition that copies any is not kept;
  nor one with a `hydra.searchpath` (from the command line or a config file): it reads config files
  outside the fingerprinted folders (`Facts.elsewhere`, which launcher/run/compose_cache.py reads too);
- whether a key is a config group (`ConfigRepository.group_exists`);
- Hydra's own `hydra` node, composed with no config (what a composed `hydra` node is checked against).

The fingerprint covers what those answers read: the content of every file under conf/,
cluster_profiles/ and the config directories (launcher/config/configdirs.py) and where they are, the
launcher's own code (path, size and mtime of each file: the schema is registered from it) and
the modules of stage kinds that installed packages add (their sections are in the schema), the
Python version, the installed Hydra and OmegaConf (size and mtime of their `__init__.py`) and Hydra's
plugins (`installed`: every file of the `hydra_plugins` namespace package, wherever sys.path has a part
of it; a plugin adds config groups to the ConfigStore and, a SearchPathPlugin, folders to the config
search path). Anything else a point reads (values, `${oc.env:...}`, the clock) is applied or resolved
per command, as without this file.

A SearchPathPlugin's folders hold config files no fingerprint covers: when Hydra's search path has an
entry that neither Hydra nor the launcher put there (launcher/config/compose.py `_initialize`), nothing
is kept (`Facts.forget`), as for a composition with a `hydra.searchpath`.

A question the file does not answer yet is asked of Hydra (initialized then) and the answer added.
The file is written by this user's commands only, in the state directory (launcher/run/runindex.py
state_dir: `<state dir>/hydra/<fingerprint>.pkl`); a file that does not load is ignored. Login node
only; `$LAUNCHER_COMPOSE_CACHE=0` turns it off with the compose cache.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import pickle
import sys
from pathlib import Path
from typing import Callable, Iterable, Optional

KEEP = 16  # fingerprints kept: one per checkout and config directory set in use


def fingerprint(config_roots: Iterable[Path], code_dir: Path, tree: Callable, plugins: list) -> Optional[str]:
    """The key of the answers, or None when they must not be kept (a tree too big to fingerprint, a file
    gone meanwhile). `tree(root, hash, by_content, now_allowed)` feeds a folder's files into the hash
    (launcher/run/compose_cache.py `_tree`); `plugins` names the stage kinds packages add, with their
    modules' size and mtime (their sections are in the schema; compose_cache.plugin_kinds)."""
    config_roots = list(config_roots)
    h = hashlib.sha256(json.dumps([sys.version, [str(r) for r in config_roots], plugins]).encode())
    try:
        h.update(json.dumps(installed()).encode())
        for root in config_roots:
            if not tree(Path(root), h, True, True):
                return None
        tree(code_dir, h, False, True)
    except (OSError, AttributeError):
        return None
    return h.hexdigest()[:32]


def installed() -> list:
    """What of the installed Hydra a composition depends on beyond the config files: the path, size and
    mtime (ns) of Hydra's and OmegaConf's `__init__.py`, and of every file of Hydra's plugins (the
    `hydra_plugins` namespace package in each sys.path entry that has one, `__pycache__` left out; Hydra
    imports all of them at initialization, hydra/core/plugins.py). Installing, upgrading or removing a
    plugin changes it. Raises OSError or AttributeError when a file went away meanwhile or Hydra is not
    installed."""
    out = []
    for name in ("hydra", "omegaconf"):
        origin = importlib.util.find_spec(name).origin
        st = os.stat(origin)
        out.append([origin, st.st_size, st.st_mtime_ns])
    spec = importlib.util.find_spec("hydra_plugins")
    # each folder once: the working directory's part and an editable install's can be the same folder
    for location in sorted({os.path.realpath(p) for p in spec.submodule_search_locations or []} if spec else ()):
        for dirpath, dirnames, filenames in os.walk(location):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for name in sorted(filenames):
                st = os.stat(os.path.join(dirpath, name))
                out.append([os.path.join(dirpath, name), st.st_size, st.st_mtime_ns])
    return out


class Facts:
    """The answers kept for one fingerprint (none: `Facts(None)` asks Hydra every time and keeps nothing)."""

    def __init__(self, path: Optional[Path]):
        self.path = path
        self.groups: dict = {}  # key -> is a config group
        self.bases: dict = {}  # tuple of group-choice override lines -> pickled composed config
        self.hydra_node: Optional[dict] = None
        self.changed = False
        self.elsewhere = False  # a composition read folders no fingerprint covers (hydra.searchpath, plugins')
        if path is not None:
            with contextlib.suppress(OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError,
                                     TypeError, ValueError):
                kept = pickle.loads(path.read_bytes())
                self.groups, self.bases, self.hydra_node = kept["groups"], kept["bases"], kept["hydra_node"]

    def forget(self) -> None:
        """Keep nothing from now on (and write nothing): Hydra's config search path has folders no
        fingerprint covers (a SearchPathPlugin's)."""
        self.path = None
        self.elsewhere = True
        self.changed = False

    def group_exists(self, key: str, ask: Callable[[str], bool]) -> bool:
        if key not in self.groups:
            self.groups[key] = ask(key)
            self.changed = True
        return self.groups[key]

    def base(self, lines: tuple, compose: Callable):
        """The config composed from these group choices: a fresh object each call (callers change it),
        unpickled from the kept bytes (with this process's working directory as hydra.runtime.cwd, which
        Hydra sets to os.getcwd()), or composed by `compose()` and kept (pickled before any caller
        changes it) unless it copied environment variables (hydra.job.env_copy) or searched folders of
        hydra.searchpath (their files can change under the same fingerprint: `elsewhere`)."""
        if self.path is not None and lines in self.bases:
            with contextlib.suppress(pickle.UnpicklingError, EOFError, AttributeError, ImportError, TypeError):
                cfg = pickle.loads(self.bases[lines])
                cfg.hydra.runtime.cwd = os.getcwd()
                return cfg
        cfg = compose()
        searched = bool(cfg.hydra.get("searchpath"))
        self.elsewhere = self.elsewhere or searched
        if self.path is not None and not len(cfg.hydra.job.env_copy) and not searched:
            try:
                self.bases[lines] = pickle.dumps(cfg, protocol=pickle.HIGHEST_PROTOCOL)
                self.changed = True
            except (pickle.PicklingError, TypeError, AttributeError):
                pass  # a value OmegaConf cannot pickle: composed again next time
        return cfg

    def reference_hydra_node(self, compose: Callable[[], dict]) -> dict:
        if self.hydra_node is None:
            self.hydra_node = compose()
            self.changed = True
        return self.hydra_node

    def save(self) -> None:
        """Write the answers when a question was added (atomically: a reader sees the old file or the new);
        keep the newest KEEP files. A state directory that cannot be written costs only time."""
        if self.path is None or not self.changed:
            return
        from jobs import layout

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            layout.atomic_write_bytes(self.path, pickle.dumps(
                {"groups": self.groups, "bases": self.bases, "hydra_node": self.hydra_node},
                protocol=pickle.HIGHEST_PROTOCOL))
            for old in sorted(self.path.parent.glob("*.pkl"), key=lambda p: p.stat().st_mtime)[:-KEEP]:
                old.unlink(missing_ok=True)
        except OSError:
            pass
        self.changed = False
