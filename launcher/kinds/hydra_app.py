"""kind=hydra_app: a user's Hydra app (`hydra_app.app: path/to/train.py`, or `hydra_app.module: pkg.train`
for an app started as `python -m`), run once per sweep point as
`<stage python> <app in the code snapshot> [--config-path/--config-name/--config-dir] <overrides>
hydra.run.dir=<the point's folder>` (jobs/kinds/hydra_app.py), so the app gets Hydra's own job runtime:
HydraConfig, ${hydra:...}, the .hydra/ files in its output folder. The Hydra launcher plugin
(hydra_plugins/launcher_slurm) submits a multirun as one stage of this kind.

The app runs from the run's code snapshot: its file (and the config folders named here) must lie in a
`pipeline.code` entry. Relative paths are read against the directory the launcher runs in; the plan
records them absolute."""
from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from jobs.layout import PLACEHOLDER
from launcher.config.placeholders import check_placeholders
from launcher.errors import ConfigError
from launcher.kinds.base import Kind, Problems


@dataclass
class HydraApp:
    """kind=hydra_app: one run of a Hydra app per sweep point."""

    app: Optional[str] = None  # the app's .py file (the one with @hydra.main); must lie in pipeline.code
    # or the app as a module, run like `python -m pkg.train` (from the snapshot): its top-level package
    # (or module) must be a pipeline.code entry
    module: Optional[str] = None
    config_name: Optional[str] = None  # --config-name (null: the app's own)
    config_path: Optional[str] = None  # --config-path, a folder in pipeline.code (null: the app's own, relative to it)
    config_dir: Optional[str] = None  # --config-dir, a folder in pipeline.code added to the search path
    overrides: List[str] = field(default_factory=list)  # Hydra overrides of this point (no sweeps)
    # hydra.run.dir: the app's output folder. null: the point's output folder in the run
    # (stages/<stage>/out/<point>/, what a child stage gets as LAUNCHER_INPUT_<STAGE>)
    run_dir: Optional[str] = None
    workdir: Optional[str] = None  # the app's working directory; null: the run's code snapshot (as every task)


PATH_KEYS = ("app", "config_path", "config_dir", "run_dir", "workdir")
IN_CODE = ("app", "config_path", "config_dir")  # copied with the snapshot: must lie in pipeline.code
# Overrides the launcher owns (the output folder, the job id) or that would make a task's Hydra run
# anything but one job. Launcher and sweeper choices only compose in a task (RUN mode launches nothing).
REFUSED = {"hydra.run": "set hydra_app.run_dir instead (the launcher passes it as hydra.run.dir)",
           "hydra.mode": "a task runs one Hydra job (RUN mode)",
           "hydra.job.id": "the launcher sets it to the task's job id"}


def refused_override(key: str) -> Optional[str]:
    for prefix, why in REFUSED.items():
        if key == prefix or key.startswith(prefix + ".") or key.startswith(prefix + "/"):
            return why
    return None


def _parse_problem(text: str) -> Optional[str]:
    """Why Hydra's override parser refuses one override, or why a task cannot take it; None if it can."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    if text.startswith("-"):
        return (f"{text!r} is a command-line flag, not an override: a task runs one Hydra job (no -m); use "
                f"hydra_app.config_name, config_path or config_dir for Hydra's --config-* flags")
    try:
        parsed = OverridesParser.create().parse_override(text)
    except HydraException as e:  # OverrideParseException, or the grammar's own
        hint = (" (a folder placeholder inside a longer value needs quotes: data='{input:prep}/train.jsonl')"
                if PLACEHOLDER.search(text) else "")
        return f"Hydra cannot parse {text!r}: {str(e).splitlines()[0]}{hint}"
    if parsed.is_sweep_override():
        return (f"{text!r} is a sweep: a task runs one Hydra job; sweep the stage instead (`launcher run -m` over "
                f"pipeline.vars that its overrides interpolate, one array task per point)")
    why = refused_override(parsed.key_or_group)
    return f"{text!r}: {why}" if why else None


def code_entry(path: str, code: Sequence[str]) -> Optional[str]:
    """The pipeline.code entry (absolute) that holds `path`: the path itself or a folder above it."""
    for c in code:
        if path == c or (os.path.isdir(c) and path.startswith(c.rstrip(os.sep) + os.sep)):
            return c
    return None


MODULE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def module_file(module: str, code: Sequence[str]) -> Optional[str]:
    """The file `python -m <module>` runs, found as the snapshot's import path finds it: a code folder
    named as the top-level package (the snapshot's root is on the path) or a top-level module file."""
    parts = module.split(".")
    for c in code:
        base = os.path.basename(c.rstrip(os.sep))
        if os.path.isdir(c) and base == parts[0]:
            inner = os.path.join(c, *parts[1:])
            for candidate in (inner + ".py", os.path.join(inner, "__main__.py")):
                if len(parts) > 1 or candidate.endswith("__main__.py"):
                    if os.path.isfile(candidate):
                        return candidate
        elif len(parts) == 1 and os.path.isfile(c) and base == f"{parts[0]}.py":
            return c
    return None


def in_snapshot(path: str, code: Sequence[str]) -> str:
    """Where `path` (in a pipeline.code entry) lies in the code snapshot, relative to its root
    (launcher/plan/snapshot.py: each entry is copied under its own name)."""
    entry = code_entry(path, code)
    if entry is None:
        raise ValueError(f"{path} is not in the code paths {list(code)}")
    return str(Path(os.path.basename(entry)) / os.path.relpath(path, entry)) if path != entry else os.path.basename(entry)


class HydraAppKind(Kind):
    name = "hydra_app"
    section, schema = "hydra_app", HydraApp
    payload_keys = ("hydra_app",)
    reads_stage_outputs = True  # an override may name a parent's output folder: {input:<stage>}

    def check_config(self, p: Problems, st: Dict[str, Any]) -> None:
        h = st["hydra_app"]
        app, module = (h["app"] or "").strip(), (h.get("module") or "").strip()
        if app and module:
            p.add("hydra_app.module", "set hydra_app.app (the app's .py file) or hydra_app.module (run as "
                                      "`python -m`), not both")
        elif not app and not module:
            p.add("hydra_app.app", "kind=hydra_app needs hydra_app.app: the app's .py file (the one with @hydra.main), "
                                   "or hydra_app.module: the module run as `python -m`")
        elif app and not app.endswith(".py"):
            p.add("hydra_app.app", f"must be the app's .py file (run as `python <app>`), got {h['app']!r}")
        elif module and not MODULE.fullmatch(module):
            p.add("hydra_app.module", f"must be a dotted module name (pkg.train), got {module!r}")
        if st["tasks"] != 1:
            p.add("tasks", f"must be 1: a task runs the app once for its sweep point, got {st['tasks']}; sweep the "
                           f"overrides instead (`launcher run -m`)")
        for i, text in enumerate(h["overrides"] or []):
            if not isinstance(text, str):
                p.add(f"hydra_app.overrides.{i}", f"must be a string (key=value), got {text!r}")
            elif why := _parse_problem(text):
                p.add(f"hydra_app.overrides.{i}", why)

    def check_in_dag(self, p: Problems, st, stages, ancestors) -> None:
        """Folder placeholders in the overrides name stages this one waits for."""
        overrides = st["hydra_app"]["overrides"] or []
        check_placeholders(p.stage, st, [(f"{p.key}.hydra_app.overrides.{i}", o) for i, o in enumerate(overrides)
                                         if isinstance(o, str)], ancestors, p.errors)

    def check_pipeline(self, cfg: Dict[str, Any], errors: List[ConfigError]) -> None:
        """The app and the config folders exist and lie in pipeline.code (what the snapshot copies)."""
        code = [os.path.abspath(c) for c in cfg["pipeline"].get("code") or []]
        for name, st in cfg["pipeline"]["stages"].items():
            if st.get("kind") != self.name:
                continue
            p, h = Problems(name, errors), st["hydra_app"]
            for k in IN_CODE:
                if not h.get(k) or (k == "app" and not str(h[k]).endswith(".py")):
                    continue  # check_config says it
                path = os.path.abspath(os.path.expanduser(h[k]))
                what = "file" if k == "app" else "folder"
                if not (os.path.isfile(path) if k == "app" else os.path.isdir(path)):
                    p.add(f"hydra_app.{k}", f"{path} is not a {what}" if os.path.exists(path) else
                          f"{path} does not exist")
                elif code_entry(path, code) is None:
                    p.add(f"hydra_app.{k}", f"{path} is not in pipeline.code ({', '.join(code) or 'empty'}): tasks run "
                          f"the app from the run's code snapshot, which holds only those paths; add the app's folder "
                          f"(with its configs) to pipeline.code")
            if h.get("module") and MODULE.fullmatch(h["module"]) and not module_file(h["module"], code):
                top = h["module"].split(".")[0]
                p.add("hydra_app.module", f"{h['module']} is not a module of pipeline.code ({', '.join(code) or 'empty'}): "
                      f"tasks import it from the run's code snapshot, which holds only those paths; add the folder of "
                      f"package '{top}' (or the file {top}.py) to pipeline.code")
            workdir = h.get("workdir") and os.path.abspath(os.path.expanduser(h["workdir"]))
            if workdir and not os.path.isdir(workdir):
                p.add("hydra_app.workdir", f"{workdir} is not a folder")

    def expand_pipeline(self, plain: List[Dict[str, Any]]) -> Tuple[List[Dict[str, Any]], Dict[str, str]]:
        """The paths of every hydra_app stage made absolute (against this directory), so the plan and
        the tasks read them alike."""
        out = []
        for cfg in plain:
            stages = cfg["pipeline"]["stages"]
            if not any(st.get("kind") == self.name for st in stages.values()):
                out.append(cfg)
                continue
            cfg = copy.deepcopy(cfg)
            for st in cfg["pipeline"]["stages"].values():
                if st.get("kind") == self.name:
                    h = st["hydra_app"]
                    h.update({k: os.path.abspath(os.path.expanduser(h[k])) for k in PATH_KEYS if h.get(k)})
            out.append(cfg)
        return out, {}

    def sweep_keys(self) -> Tuple[str, ...]:
        return ("hydra_app.app", "hydra_app.module", "hydra_app.config_path", "hydra_app.config_dir")

    def spec_extra(self, plan, stage) -> Dict[str, Any]:
        """Where the app and its config folders lie in the code snapshot (the same for every point)."""
        h = stage.payloads[0]["hydra_app"]
        return {"hydra_app": {k: in_snapshot(h[k], plan.code) if h.get(k) else None for k in IN_CODE}}

    def targets(self, stage) -> List[Tuple[str, str]]:
        which = "app" if stage.payloads[0]["hydra_app"].get("app") else "module"
        return [(f"pipeline.stages.{stage.name}.hydra_app.{which}", "hydra:main")]  # the stage's python has Hydra

    def describe(self, plan, stage, plan_dir: Path) -> List[str]:
        h = stage.payloads[0]["hydra_app"]
        where = "hydra_app.run_dir" if h.get("run_dir") else f"stages/{stage.name}/out/<point>/"
        app = h["app"] or f"python -m {h.get('module')}"
        return [f"{stage.name}: Hydra app {app}" + (f" (--config-name {h['config_name']})" if h.get("config_name")
                                                         else "")
                + f", one run per sweep point ({stage.points}), from the code snapshot; its output folder: {where}"]


KIND = HydraAppKind()
