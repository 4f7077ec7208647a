"""Shell completion (bash, zsh) through argcomplete: `launcher completion bash|zsh` prints the script to
source; the shell then runs `launcher` with _ARGCOMPLETE set, and cli.main answers from the argparse
parser before any verb runs.

The completers here must be fast (each TAB starts a process): they read directory listings and small
files only. No Hydra composition, no Slurm query, no YAML parser:
- runs: the run ids under the run root (`--root`, else $LAUNCHER_RUN_ROOT, else ./runs), in the
  per-user run index (launcher/run/runindex.py), and `latest`;
- stages: the stage names in the run's plan.json;
- overrides: config groups with `=` (`pipeline=`, `cluster=`, `data=`, `model=`), then a group's options
  (the YAML files of conf/<group>/ and of each config directory, `--config-dir` and
  $LAUNCHER_CONFIG_DIRS; for `cluster`, the cluster profiles), and the root config's keys
  (`wait=`, `run_root=`, `sweep.independent=`, ...), read from launcher/config/schema.py's source."""
from __future__ import annotations

import ast
import json
import os
from pathlib import Path
from typing import Dict, Iterable, List, Optional

SHELLS = ("bash", "zsh")
_PACKAGE = Path(__file__).resolve().parent
_CONF = Path(os.environ.get("LAUNCHER_CONF_DIR", _PACKAGE.parent / "conf"))
_PROFILES = Path(os.environ.get("LAUNCHER_PROFILES_DIR", _PACKAGE.parent / "cluster_profiles"))
_NOT_GROUPS = {"envs", "hydra"}  # conf/envs holds requirement files; hydra/* is Hydra's own
_INTERNAL_OPTIONS = {"schema"}


def script(shell: str) -> str:
    """The completion script for `shell` (bash or zsh), to `source` or `eval`."""
    import argcomplete

    return argcomplete.shellcode(["launcher"], shell=shell)


def autocomplete(parser, **kw) -> None:
    """Answer a completion request (the shell set _ARGCOMPLETE) and exit; nothing otherwise. Options
    are offered once a `-` is typed. `kw` goes to argcomplete (tests: exit_method, output_stream)."""
    if "_ARGCOMPLETE" not in os.environ:
        return
    import argcomplete

    argcomplete.autocomplete(parser, always_complete_options=False, **kw)


# -- completers: (prefix, parsed_args) -> candidates ----------------------------------------------------

def _root(parsed_args) -> Path:
    from launcher.run.runroot import default_root

    root = getattr(parsed_args, "root", None)
    return Path(root) if root else default_root()


def _run_ids(folder: Path, need_run_json: bool) -> List[str]:
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return [n for n in names if not n.startswith(".") and (not need_run_json or (folder / n / "run.json").exists())]


def complete_run(prefix: str, parsed_args, **_) -> List[str]:
    """Run ids under the run root and in the run index, and `latest`."""
    from launcher.run import runindex

    ids = set(_run_ids(_root(parsed_args), True)) | set(_run_ids(runindex.index_dir(), False))
    return sorted(i for i in ids | {"latest"} if i.startswith(prefix))


def _run_dir(ref: str, root: Path) -> Optional[Path]:
    """The run directory `ref` names (as rundir.resolve_run, without its imports); None if none."""
    from launcher.run import runindex

    if ref == "latest":
        dirs = [root / n for n in _run_ids(root, True)]
        return max(dirs, key=lambda d: (d / "run.json").stat().st_mtime, default=None)
    for candidate in (Path(ref), root / ref):
        if (candidate / "run.json").exists():
            return candidate
    return runindex.lookup(ref)


def complete_stage(prefix: str, parsed_args, **_) -> List[str]:
    """The stages of the run named before it (from its plan.json)."""
    run = _run_dir(getattr(parsed_args, "run", "") or "", _root(parsed_args))
    try:
        names = [s["name"] for s in json.loads((run / "plan.json").read_text())["stages"]] if run else []
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [n for n in names if n.startswith(prefix)]


def _config_dirs(parsed_args) -> List[Path]:
    """--config-dir and $LAUNCHER_CONFIG_DIRS, as far as they exist (a stale one is the verb's error)."""
    given = list(getattr(parsed_args, "config_dir", None) or [])
    given += [d for d in os.environ.get("LAUNCHER_CONFIG_DIRS", "").split(os.pathsep) if d.strip()]
    return [Path(os.path.expanduser(d)) for d in given if os.path.isdir(os.path.expanduser(d))]


def _yaml_names(folder: Path) -> List[str]:
    try:
        return [n[:-5] for n in os.listdir(folder) if n.endswith(".yaml") and not n.startswith(".")]
    except OSError:
        return []


def groups(config_dirs: Iterable[Path] = ()) -> Dict[str, List[str]]:
    """{group: its options}, from the folders alone: conf/<group>/*.yaml and each config directory's,
    and `cluster` from the profiles (cluster_profiles/ and DIR/cluster_profiles/)."""
    dirs = list(config_dirs)
    out: Dict[str, set] = {"cluster": set(_yaml_names(_PROFILES))}
    for d in dirs:
        out["cluster"] |= set(_yaml_names(d / "cluster_profiles"))
    for base in [_CONF, *dirs]:
        try:
            names = [n for n in os.listdir(base) if (base / n).is_dir()]
        except OSError:
            continue
        for g in names:
            if g not in _NOT_GROUPS and g != "cluster_profiles" and not g.startswith("."):
                out.setdefault(g, set()).update(_yaml_names(base / g))
    return {g: sorted(o - _INTERNAL_OPTIONS) for g, o in sorted(out.items()) if o - _INTERNAL_OPTIONS}


def _fields(tree: ast.Module, name: str) -> List[str]:
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return [s.target.id for s in node.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)]
    return []


def root_keys() -> List[str]:
    """The root config's keys that are not config groups, and `sweep.*`: read from the source of the
    schema (launcher/config/schema.py, classes Config and Sweep) so that nothing imports OmegaConf."""
    try:
        tree = ast.parse((_PACKAGE / "config" / "schema.py").read_text())
    except (OSError, SyntaxError):
        return []
    return [k for k in _fields(tree, "Config") if k not in ("pipeline", "cluster", "data", "model", "sweep")] + \
        [f"sweep.{k}" for k in _fields(tree, "Sweep")]


def complete_override(prefix: str, parsed_args, **_) -> List[str]:
    """`group=` and `key=` while the key is typed (with Hydra's + / ++ / ~ prefixes kept); a group's
    options after `group=`."""
    head = prefix[: len(prefix) - len(prefix.lstrip("+~"))]
    body = prefix[len(head):]
    found = groups(_config_dirs(parsed_args))
    key, eq, value = body.partition("=")
    if eq:
        return [f"{head}{key}={o}" for o in found.get(key, []) if o.startswith(value)]
    words = [f"{g}=" for g in found] + [f"{k}=" for k in root_keys()]
    return [f"{head}{w}" for w in words if w.startswith(body)]


def complete_group(prefix: str, parsed_args, **_) -> List[str]:
    return [g for g in groups(_config_dirs(parsed_args)) if g.startswith(prefix)]


def complete_profile(prefix: str, parsed_args, **_) -> List[str]:
    return [o for o in groups(_config_dirs(parsed_args))["cluster"] if o.startswith(prefix)]
