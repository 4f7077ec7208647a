"""Per-stage software environments: which one a stage gets, building them, describing them."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional

from jobs import layout

from launcher.config.compose import CONF_DIR, PROJECT_ROOT
from launcher.errors import ConfigError, LauncherError

SPECS_DIR = CONF_DIR / "envs"  # <name>.txt: pip requirements; constraints.txt applies to all


def envs_dir(cluster: dict) -> Path:
    return Path(cluster.get("envs_dir") or os.environ.get("LAUNCHER_ENVS_DIR") or PROJECT_ROOT / ".envs")


def resolve(cluster: dict, stage: str, kind: str, preferred: Optional[str] = None) -> Dict[str, Any]:
    """The environment of one stage: the profile's mapping for the stage name, else `preferred` (what
    the kind asks for this stage's config: serve.engine=llama.cpp -> llamacpp) when the profile defines
    it, else the mapping for its kind, else none (the cluster's interpreter, the launcher's own by
    default)."""
    mapping = cluster.get("stage_environments") or {}
    envs = cluster.get("environments") or {}
    # a stage named like its kind (serve: serve) is under the kind's mapping: the kind's preference wins
    by_name = mapping.get(stage) if stage != kind else None
    name = by_name or (preferred if preferred in envs else None) or mapping.get(kind)
    if name is not None and name not in envs:
        key = "cluster.stage_environments." + (stage if stage in mapping else kind)
        raise ConfigError(f"environment '{name}' is not defined (cluster.environments: {', '.join(envs) or 'none'})",
                          stage=stage, key=key)
    env = envs.get(name, {}) if name else {}
    return {"name": name, "python": python_of(cluster, name),
            "setup": list(env.get("setup") or []), "env": dict(env.get("env") or {}),
            "imports": list(env.get("imports") or []), "container_image": env.get("container_image"),
            "container_mounts": list(env.get("container_mounts") or [])}


def python_of(cluster: dict, name: Optional[str]) -> str:
    """An environment's interpreter: its own, else its built venv's, else the cluster's, else ours."""
    env = (cluster.get("environments") or {}).get(name, {}) if name else {}
    if env.get("python"):
        return env["python"]
    if env.get("build"):
        return str(envs_dir(cluster) / name / "bin" / "python")
    return cluster.get("python") or sys.executable


def interpreter_problems(python: str, modules: Iterable[str] = (), targets: Iterable[str] = (),
                         pythonpath: Optional[Iterable[str]] = None, timeout: float = 120) -> Dict[str, str]:
    """What `python` cannot do: {module or target: why}, or {"": why} when it does not start at all.
    Modules are imported and targets ('pkg.mod.Class', 'pkg.mod:func') resolved in one process, with
    `pythonpath` as the tasks will have it (snapshot.pythonpath_of a snapshot view; default: this
    project's root). Like a task, it starts in the first folder of that path: `python -m` puts its
    working directory first on sys.path, and the submitting shell's must not count."""
    if not (os.path.isfile(python) and os.access(python, os.X_OK)):
        return {"": f"interpreter {python} does not exist or is not executable"}
    modules, targets = list(modules), list(targets)
    if not modules and not targets:
        return {}
    path = [str(p) for p in pythonpath] if pythonpath is not None else [str(PROJECT_ROOT)]
    # The batch script appends the submitting shell's PYTHONPATH after the snapshot (render.py), and
    # tasks inherit it (sbatch --export=ALL, the local backend): check with the same path.
    inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    known = _known_good(python, modules, targets, path, inherited)
    if known is not None and known.exists():
        return {}
    found = _ask(python, modules, targets, path, inherited, timeout)
    if known is not None and not found:
        with contextlib.suppress(OSError):  # a cache: the next command asks again
            known.parent.mkdir(parents=True, exist_ok=True)
            known.touch()
    return found


def _ask(python: str, modules: List[str], targets: List[str], path: List[str], inherited: List[str],
         timeout: float) -> Dict[str, str]:
    try:
        p = subprocess.run([python, "-m", "jobs.runtime.targets"], input=json.dumps({"modules": modules, "targets": targets}),
                           capture_output=True, text=True, timeout=timeout, cwd=path[0],
                           env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(path + inherited)})
    except subprocess.TimeoutExpired:
        return {"": f"{python} did not import {', '.join(modules + targets)} in {timeout:.0f} s"}
    if p.returncode != 0:
        return {"": f"{python} failed: {(p.stderr.strip().splitlines() or ['(no output)'])[-1]}"}
    return json.loads(p.stdout.strip().splitlines()[-1])


INTERPRETER_CACHE = "LAUNCHER_INTERPRETER_CACHE"  # 0: ask the interpreter every time


def _known_good(python: str, modules: List[str], targets: List[str], path: List[str],
                inherited: List[str]) -> Optional[Path]:
    """The file that says this interpreter imported these modules and found these targets from this
    path before (only a clean answer is kept: a problem is asked again after every fix). Its name is
    a digest of all the answer depends on: the interpreter (its real path, size and mtime, and the
    mtime of each site-packages folder under its prefix, which pip changes on every install or
    removal), the modules and targets, and every file on `path` (relative name, size, mtime; `path`
    is a snapshot view of links, made anew each time, so its own location does not count) and the
    inherited PYTHONPATH. None (no cache) when $LAUNCHER_INTERPRETER_CACHE=0 or there is no
    site-packages folder to watch. A cold `launcher plan` spends ~50 ms per interpreter otherwise."""
    state = _interpreter_state(python)
    if state is None:
        return None
    h = hashlib.sha256()
    try:
        h.update(json.dumps([*state, modules, targets, inherited, sys.version]).encode())
        for i, entry in enumerate(path):
            for dirpath, dirnames, filenames in os.walk(entry):
                dirnames.sort()
                rel = os.path.relpath(dirpath, entry)
                for name in sorted(filenames):
                    fst = os.stat(os.path.join(dirpath, name))  # through the view's links
                    h.update(f"{i}/{rel}/{name}\0{fst.st_size}\0{fst.st_mtime_ns}\n".encode())
    except OSError:
        return None
    return _cache_dir() / h.hexdigest()[:32]


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "launcher" / "interpreters"


def _interpreter_state(python: str) -> Optional[list]:
    """[real path, size, mtime, [(site-packages folder, mtime)...]] of an interpreter: what changes when it
    is replaced or a package is installed or removed (pip changes the folder's entries); None when
    answers about it are not kept ($LAUNCHER_INTERPRETER_CACHE=0, no site-packages folder, a stat fails)."""
    import glob

    if os.environ.get(INTERPRETER_CACHE) == "0":
        return None
    real = os.path.realpath(python)
    # a venv's own site-packages, and its base interpreter's (the venv's python links to it)
    prefixes = {Path(python).parent.parent, Path(real).parent.parent}
    sites = sorted({d for prefix in prefixes for d in glob.glob(str(prefix / "lib*" / "python3*" / "site-packages"))})
    if not sites:
        return None
    try:
        st = os.stat(real)
        return [real, st.st_size, st.st_mtime_ns, [(d, os.stat(d).st_mtime_ns) for d in sites]]
    except OSError:
        return None


def packages(python: str) -> List[str]:
    """`name==version` of every distribution the interpreter sees (pip freeze, without pip). Run in an
    empty folder: `-c` puts the working directory first on sys.path, and from a checkout its
    `*.egg-info` would be listed as installed in every interpreter (tasks do not start there). Kept
    between commands while the interpreter, its site-packages folders and $PYTHONPATH are unchanged
    (`_interpreter_state`: starting the interpreter is ~0.1 s of every `launcher run`)."""
    state = _interpreter_state(python)
    kept = None
    if state is not None:
        digest = hashlib.sha256(json.dumps([*state, os.environ.get("PYTHONPATH", "")]).encode()).hexdigest()[:32]
        kept = _cache_dir() / f"packages-{digest}.json"
        with contextlib.suppress(OSError, ValueError):
            found = json.loads(kept.read_text())
            if isinstance(found, list):
                return found
    code = ("import importlib.metadata as m, json; print(json.dumps(sorted({f\"{d.metadata['Name']}=={d.version}\" "
            "for d in m.distributions() if d.metadata['Name']})))")
    with tempfile.TemporaryDirectory(prefix="launcher-packages-") as empty:
        p = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120, cwd=empty)
    if p.returncode != 0:
        return [f"<could not list: {p.stderr.strip()[-200:]}>"]
    listed = json.loads(p.stdout)
    if kept is not None:
        with contextlib.suppress(OSError):
            kept.parent.mkdir(parents=True, exist_ok=True)
            layout.atomic_write_text(kept, json.dumps(listed))
    return listed


def describe(stage_envs: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    """What the run records: per stage its environment, per interpreter its packages (in parallel)."""
    pythons = sorted({e["python"] for e in stage_envs.values()})
    with ThreadPoolExecutor(max_workers=min(8, len(pythons) or 1)) as pool:
        listed = dict(zip(pythons, pool.map(packages, pythons)))
    prefixes = {py: os.path.realpath(os.path.join(os.path.dirname(py), "..")) for py in pythons}
    return {"stages": stage_envs, "interpreters": {py: {"prefix": prefixes[py], "packages": listed[py]}
                                                   for py in pythons}}


# -- building --------------------------------------------------------------------------------------

def spec_files(build: str) -> List[Path]:
    """[<build>.txt, constraints.txt if any, <build>.nodeps.txt if any (installed with --no-deps),
    <build>.share.txt if any (files from source distributions, launcher/config/env_share.py)]."""
    from launcher.config import configdirs

    dirs = [d / "envs" for d in configdirs.current()] + [SPECS_DIR]  # yours first (launcher/config/configdirs.py)
    specs = next((d for d in dirs if (d / f"{build}.txt").exists()), None)
    if specs is None:
        names = sorted({p.stem for d in dirs for p in d.glob("*.txt") if p.stem != "constraints" and "." not in p.stem})
        raise LauncherError(f"no requirements file {build}.txt in {', '.join(map(str, dirs))} (available: "
                            f"{', '.join(names)})")
    return [f for f in (specs / f"{build}.txt", specs / "constraints.txt", specs / f"{build}.nodeps.txt",
                        specs / f"{build}.share.txt") if f.exists()]


def _digest(files: List[Path]) -> str:
    return hashlib.sha256(b"".join(f.read_bytes() for f in files) + sys.version.encode()).hexdigest()[:16]


def build_state(cluster: dict, name: str) -> str:
    """'built', 'outdated' (requirements changed since) or 'not built'."""
    stamp = envs_dir(cluster) / name / ".launcher-built"
    if not stamp.exists():
        return "not built"
    return "built" if stamp.read_text().strip() == _digest(spec_files(cluster["environments"][name]["build"])) \
        else "outdated"


def build(cluster: dict, name: str, echo: Callable = print, force: bool = False) -> Path:
    """Create (or bring up to date) the environment `name` from its requirements. A hash of the
    requirement files decides: the same hash means nothing to do."""
    envs = cluster.get("environments") or {}
    if name not in envs or not envs[name].get("build"):
        buildable = sorted(n for n, e in envs.items() if e.get("build"))
        raise LauncherError(f"cluster '{cluster['name']}' has no buildable environment '{name}' "
                            f"(buildable: {', '.join(buildable) or 'none'})")
    files = spec_files(envs[name]["build"])
    digest = _digest(files)
    target = envs_dir(cluster) / name
    stamp = target / ".launcher-built"
    if not force and stamp.exists() and stamp.read_text().strip() == digest:
        echo(f"environment '{name}' is up to date ({target}, requirements hash {digest}); nothing to do")
        return target
    t0 = time.time()
    target.parent.mkdir(parents=True, exist_ok=True)
    if not (target / "bin" / "python").exists():
        echo(f"{name}: creating venv {target}")
        subprocess.run([sys.executable, "-m", "venv", str(target)], check=True)
    pip = [str(target / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
           "--progress-bar", "off"]
    constraints = [f for f in files if f.name == "constraints.txt"]
    nodeps = [f for f in files if f.name.endswith(".nodeps.txt")]
    steps = [pip + ["-r", str(files[0])] + [a for c in constraints for a in ("-c", str(c))]]
    steps += [pip + ["--no-deps", "-r", str(f)] for f in nodeps]
    echo(f"{name}: installing {', '.join(f.name for f in files)} (progress below)")
    for cmd in steps:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in p.stdout:
            if line.startswith(("Collecting", "Installing", "Successfully", "ERROR", "error")):
                echo(f"{name}: {line.rstrip()}")
        if p.wait() != 0:
            raise LauncherError(f"building environment '{name}' failed (pip exit {p.returncode}); {target} is "
                                f"left as it is, the next build retries")
    for share in (f for f in files if f.name.endswith(".share.txt")):  # after pip: the versions it installed
        from launcher.config import env_share

        env_share.install(target, share, echo)
    stamp.write_text(digest + "\n")
    echo(f"{name}: built in {time.time() - t0:.0f} s: {target / 'bin' / 'python'}")
    return target
