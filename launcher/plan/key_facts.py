"""What the login node's files say about the parts of the content keys (launcher/plan/keys.py Facts):
the code snapshot's files, each stage environment's package list, the external inputs' identity.

- Code: sha256 over (path in the snapshot, content) of every file `launcher/plan/snapshot.py listing`
  would copy (the same exclusions: git-ignored files, caches, virtual environments, the run root).
- Environment: a built environment (`cluster.environments.<name>.build`) by its requirement files
  (<build>.txt, constraints.txt, <build>.nodeps.txt, <build>.share.txt: what `launcher env build` installs from); any
  other interpreter by its real path and the modification times of its site-packages folders (pip
  adds or removes a distribution's folder there, which changes the folder's time); a container
  image by its size and modification time; plus the setup lines and variables the environment sets.
- Inputs: a local file of at most SMALL_FILE bytes by its content (sha256), a larger one by size and
  modification time; a folder by every file's relative path, size and modification time (a
  `touch` of one document changes it); a hub reference (hf://org/name[@rev]) as written: the
  revision it pins, else the name of the branch it follows (resolved on the node, not here).
"""
from __future__ import annotations

import glob
import hashlib
import os
from pathlib import Path
from typing import Tuple

from launcher.config import environments
from launcher.plan import snapshot
from launcher.errors import LauncherError
from launcher.plan.keys import HUB_PREFIX, Facts, digest, input_candidates
from launcher.plan.model import Plan

SMALL_FILE = 1 << 20  # bytes: files up to this size are identified by content
MAX_FOLDER_FILES = 200_000  # a folder with more is identified by its first ones (a login node stats them all)


def gather(plan: Plan, run_root: str) -> Facts:
    """The facts every key of the plan needs. Reads files (stat, small contents); starts no process
    but git (snapshot.listing)."""
    exclude = [run_root]
    facts = Facts(node_code=_files_digest([(f, f"jobs/{r}") for f, r in snapshot.listing(snapshot.PROJECT_ROOT / "jobs")]
                                          + [(f, f"templates/{r}") for f, r in
                                             snapshot.listing(snapshot.PROJECT_ROOT / "templates")]))
    for path in plan.code:
        if os.path.exists(path):
            facts.code[path] = _files_digest(snapshot.listing(Path(path), exclude))
    for name, stage in plan.stages.items():
        facts.environments[name] = environment_identity(plan.cluster, stage.environment)
        # points share a payload object where a sweep leaves the stage alone (model.py _payloads)
        for payload in {id(p): p for p in stage.payloads}.values():
            for s in input_candidates(payload):
                if s not in facts.inputs and (found := input_identity(s)):
                    facts.inputs[s] = found
    return facts


def _files_digest(files) -> str:
    h = hashlib.sha256()
    for src, rel in sorted(files, key=lambda x: x[1]):
        h.update(rel.encode() + b"\0")
        with open(src, "rb") as f:
            h.update(hashlib.sha256(f.read()).digest())
    return h.hexdigest()[:16]


def environment_identity(cluster: dict, env: dict) -> Tuple[str, str]:
    """(digest, what it covers) of a stage's environment (see the module docstring)."""
    name = env.get("name")
    spec = ((cluster.get("environments") or {}).get(name) or {}) if name else {}
    own = {"setup": env.get("setup"), "env": env.get("env")}
    if spec.get("build"):
        try:
            files = environments.spec_files(spec["build"])
        except LauncherError as e:  # no requirements file: preflight reports it; the key says so
            return digest({**own, "missing": str(e)}), f"environment '{name}': requirements not found"
        return (digest({**own, "requirements": [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]}),
                f"environment '{name}' built from {', '.join(f.name for f in files)}")
    image = env.get("container_image")
    if image:
        st = _stat(image)
        return digest({**own, "image": image, "stat": st}), f"container image {image} (size, mtime)"
    python = env.get("python") or ""
    real = os.path.realpath(python)
    prefix = os.path.dirname(os.path.dirname(python))
    sites = sorted(glob.glob(os.path.join(prefix, "lib", "python*", "site-packages")))
    return (digest({**own, "python": real, "site_packages": {s: _stat(s) for s in sites}}),
            f"interpreter {real} (site-packages folder times)")


def _stat(path: str):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def input_identity(s: str) -> Tuple[str, str] | None:
    """(digest, what) of an external input named by a payload string, None when it names no existing
    local path (a relative path is taken from the working directory, as preflight does)."""
    if s.startswith(HUB_PREFIX):
        return digest(s), "hub reference as written (its pinned revision, or the branch it follows)"
    path = os.path.abspath(os.path.expanduser(s))
    if os.path.isfile(path):
        st = os.stat(path)
        if st.st_size <= SMALL_FILE:
            with open(path, "rb") as f:
                return hashlib.sha256(f.read()).hexdigest()[:16], f"file {path} (content)"
        return digest([st.st_size, st.st_mtime_ns]), f"file {path} (size, mtime)"
    if os.path.isdir(path):
        entries = []
        for top, dirs, files in os.walk(path):
            dirs.sort()
            for f in sorted(files):
                entries.append([os.path.relpath(os.path.join(top, f), path), _stat(os.path.join(top, f))])
            if len(entries) > MAX_FOLDER_FILES:
                return digest(entries), f"folder {path} (its first {len(entries)} files in walk order: paths, sizes, mtimes)"
        return digest(entries), f"folder {path} ({len(entries)} files: paths, sizes, mtimes)"
    return None
