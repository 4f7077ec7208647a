"""Composed configs kept between commands: the same `launcher run` (or `plan`) again takes its sweep
points and resolved configs from the last composition instead of composing with Hydra again, which is
most of a second identical run's time (benchmarks/bench_cache.py).

An entry is keyed on everything composition reads: the overrides and -m; the content of every file
under conf/, cluster_profiles/ and the config directories (launcher/config/configdirs.py); the launcher's own
code (path, size and mtime of every file under launcher/: the schema and the composition rules); the working
directory and the whole environment (`${oc.env:...}`, `${abspath:...}` and the site default read
them); the Python version; the stage kinds installed packages add (their modules' size and mtime); the
installed Hydra, OmegaConf and Hydra plugins (launcher/config/hydra_facts.py `installed`). A
config tree with a `${now:` interpolation (a value that changes by itself) is never cached, nor a
config directory of more than MAX_FILES files, nor a composition with a
hydra.searchpath or whose search path a SearchPathPlugin extended (those folders are not in the key). Errors are not cached. What Hydra answers from the
config files alone (a group choice's composition) is kept too, across different overrides
(launcher/config/hydra_facts.py, `facts_path`).

Entries: <state dir>/compose/<key>.json (launcher/run/runindex.py state_dir), the newest KEEP kept.
$LAUNCHER_COMPOSE_CACHE=0 turns it off. Login node only.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from jobs import layout, point_configs

KEEP = 64
MAX_FILES = 2000
ENV = "LAUNCHER_COMPOSE_CACHE"
LAUNCHER_DIR = Path(__file__).resolve().parents[1]  # the whole launcher package: schema, composition rules


def _tree(root: Path, h, by_content: bool, now_allowed: bool = False) -> bool:
    """Feed every file under root into h (its content, or its size and mtime); False when it cannot
    be cached (too many files, or a ${now: interpolation unless now_allowed: an unresolved config,
    as launcher/config/hydra_facts.py keeps, holds the interpolation, not its value)."""
    count = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for name in sorted(filenames):
            count += 1
            if count > MAX_FILES:
                return False
            path = Path(dirpath) / name
            h.update(str(path).encode() + b"\0")
            if by_content:
                data = path.read_bytes()
                if b"${now:" in data and not now_allowed:
                    return False
                h.update(data)
            else:
                st = path.stat()
                h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    return True


def key(overrides: Sequence[str], multirun: bool) -> Optional[str]:
    """The entry's key, or None when this composition must not be cached."""
    from launcher.config import compose, configdirs, hydra_facts

    if os.environ.get(ENV) == "0":
        return None
    h = hashlib.sha256(json.dumps([list(overrides), multirun, os.getcwd(), sorted(os.environ.items()),
                                   sys.version, [str(d) for d in configdirs.current()], plugin_kinds()]).encode())
    try:
        h.update(json.dumps(hydra_facts.installed()).encode())
        for root in (compose.CONF_DIR, compose.PROFILES_DIR, *configdirs.current()):
            if not _tree(Path(root), h, by_content=True):
                return None
        _tree(LAUNCHER_DIR, h, by_content=False)
    except (OSError, AttributeError):
        return None  # a file went away meanwhile (or Hydra is not installed): compose it
    return h.hexdigest()[:32]


def _dir() -> Path:
    from launcher.run import runindex

    return runindex.state_dir() / "compose"


def plugin_kinds() -> list:
    """The stage kinds installed packages add (launcher/kinds/__init__.py plugins) with the path, size and
    mtime of each one's module: their sections are part of the schema that composition types the config
    with. A module that cannot be found is named without them (the plan says what is wrong with it)."""
    import importlib.util

    from launcher import kinds

    out = []
    for name, where in sorted(kinds.plugins().items()):
        try:
            origin = importlib.util.find_spec(where.partition(":")[0]).origin
            st = os.stat(origin)
            out.append([name, where, origin, st.st_size, st.st_mtime_ns])
        except (ImportError, AttributeError, ValueError, OSError, TypeError):
            out.append([name, where])
    return out


def facts_path() -> Optional[Path]:
    """Where the answers of Hydra's composition that depend on the config files alone are kept
    (launcher/config/hydra_facts.py), or None when they are not (cache off, a tree too big)."""
    from launcher.config import compose, configdirs, hydra_facts
    from launcher.run import runindex

    if os.environ.get(ENV) == "0":
        return None
    fp = hydra_facts.fingerprint([compose.CONF_DIR, compose.PROFILES_DIR, *configdirs.current()], LAUNCHER_DIR, _tree,
                                 plugin_kinds())
    return runindex.state_dir() / "hydra" / f"{fp}.pkl" if fp else None


def compose_points(overrides: Sequence[str], multirun: bool) -> Tuple[List[List[str]], List[dict]]:
    """launcher.config.compose.compose_points, from the cache when nothing it reads changed."""
    from launcher.config import compose

    k = key(overrides, multirun)
    entry = _dir() / f"{k}.json" if k else None
    if entry is not None:
        try:
            found = layout.read_json(entry)
        except (OSError, ValueError):
            found = None
        if found and found.get("configs"):  # the compact form of config/points.json (jobs/point_configs.py)
            try:
                # shared, as composition shares them: a 10,000-point sweep's checks and keys are made once
                # per distinct object (with a copy per point, the same command again took 5x as long)
                configs = point_configs.decode(found["configs"], shared=True)
                point_configs.known(configs, found["configs"])  # points.json writes the same encoding
                return found["points"], configs
            except (KeyError, TypeError, ValueError):
                pass  # an entry of another version: compose it
    with compose.kept_facts(facts_path()) as facts:
        points, configs = compose.compose_points(overrides, multirun)
    if entry is not None and not facts.elsewhere:  # hydra.searchpath, plugins': folders the key does not cover
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            layout.atomic_write_text(entry, json.dumps({"points": points, "configs": point_configs.encode(configs)}))
            for old in sorted(entry.parent.glob("*.json"), key=lambda p: p.stat().st_mtime)[:-KEEP]:
                old.unlink(missing_ok=True)
        except OSError:
            pass  # a cache: the next command composes again
    return points, configs
