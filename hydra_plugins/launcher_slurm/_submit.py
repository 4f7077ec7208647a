"""launch() of the launcher_slurm plugin: the batch of Hydra jobs Hydra's sweeper hands over -> one
stage of kind hydra_app (launcher/kinds/hydra_app.py), one sweep point per job -> the launcher's own
plan, preflight, run directory, code snapshot and submission (launcher.run.ops) -> returns at once.

Per job, as Hydra's launchers do: its config is Hydra's own (load_sweep_config: the multirun's hydra
overrides and the job's), hydra.job.num = its index, its output folder
<hydra.sweep.dir>/<hydra.sweep.subdir>, and its resources hydra.launcher of that config (a config group
of the app may change them per job: each resource set is its own array job). The task runs the app
file with the job's overrides, the multirun's hydra overrides that mean something for one job, and
hydra.sweep.dir/subdir, hydra.job.num and hydra.run.dir set so that ${hydra:...} resolves as in a
multirun. Hydra's sweeper wants one JobReturn per job: each says COMPLETED for "submitted" (Hydra
cannot wait for a detached job), its return_value the run id and the job's folder."""
from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

from jobs.runtime.hydra_overrides import key as override_key
from jobs.runtime.hydra_overrides import quote

from hydra_plugins.launcher_slurm._settings import launcher_key, stage_settings

log = logging.getLogger(__name__)
# Hydra overrides of the multirun that are not passed to the tasks: the sweeper (the sweep is done;
# its params are sweeps, which a RUN-mode job refuses), the mode, the folders and job numbers the
# plugin sets itself. The launcher's stay: a task composes the config as the multirun did (an app's
# config group may set hydra.launcher.*), and RUN mode launches nothing.
NOT_PASSED = ("hydra/sweeper", "hydra.sweeper", "hydra.mode", "hydra.run", "hydra.sweep", "hydra.job.num",
              "hydra.job.id")


def passed(override: str) -> bool:
    k = override_key(override)
    return not any(k == p or k.startswith(p + ".") for p in NOT_PASSED)


def stage_name(job_name: str) -> str:
    """Hydra's job name as a stage and pipeline name (launcher/plan/model.py NAME)."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", job_name or "app")[:64]
    return name if name[:1].isalnum() else f"app{name}"[:64]


def app_source() -> Tuple[Dict[str, Any], str]:
    """({"app": the .py file} or {"module": its name}, the code path that holds it) of what the multirun
    was started with: `python <app>.py` or `python -m pkg.train` (the code path is then the folder of
    the top-level package, or the top-level module's file). An installed command (a console script) is
    refused: there is no file of the app for the snapshot."""
    from launcher.errors import LauncherError

    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name and getattr(main, "__file__", None):
        module = spec.name[:-len(".__main__")] if spec.name.endswith(".__main__") else spec.name
        depth = len(module.split("."))
        path = os.path.abspath(main.__file__)
        up = depth if path.endswith("__main__.py") else depth - 1  # parents of the file to the top-level package
        root = path if up == 0 else os.path.dirname(path) if up == 1 else str(Path(path).parents[up - 1])
        return {"module": module}, root
    app = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if not app.endswith(".py") or not os.path.isfile(app):
        raise LauncherError(f"hydra/launcher=launcher_slurm runs the app on the nodes as `python <app>.py` or `python -m "
                            f"<module>`: start the multirun one of those ways (not through an installed command; got "
                            f"{app!r})")
    return {"app": app}, os.path.dirname(app)


def config_dirs(config) -> tuple:
    """(the primary config folder, a --config-dir folder) of the multirun, each None when there is none
    (or it is not a folder: a pkg:// source is imported, not copied)."""
    from omegaconf import OmegaConf

    sources = OmegaConf.to_container(config.hydra.runtime.config_sources, resolve=True)
    main = next((s["path"] for s in sources if s["provider"] == "main" and s["schema"] == "file" and s["path"]), None)
    extra = next((s["path"] for s in sources if s["provider"] == "command-line" and s["schema"] == "file"), None)
    return (os.path.abspath(main) if main else None), (os.path.abspath(extra) if extra else None)


def code_paths(holder: str, main: str | None, extra: str | None, more: Sequence[str], widen: bool = True) -> List[str]:
    """What the run's snapshot copies: the app's folder, widened to hold its primary config folder (so
    the app's config_path, relative to it, finds the copy), a --config-dir folder and hydra.launcher.code.
    A module app's top-level package (widen=False) keeps its own name, its import name: a config folder
    outside it is copied beside it."""
    first = holder
    if main and widen:
        first = os.path.commonpath([first, main])
    code = [first]
    for path in [None if widen else main, extra, *map(os.path.abspath, more)]:
        if path and not (path == first or path.startswith(first.rstrip(os.sep) + os.sep)) and path not in code:
            code.append(path)
    return code


def job_configs(config, loader, job_overrides, initial_job_idx: int) -> List[Dict[str, Any]]:
    """Per job: {idx, overrides, sweep_dir, subdir, run_dir, params} from its own Hydra config."""
    from omegaconf import OmegaConf, open_dict

    jobs = []
    for i, overrides in enumerate(job_overrides):
        idx = initial_job_idx + i
        sweep_config = loader.load_sweep_config(config, list(overrides))
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = str(idx)  # as Hydra's basic launcher: only the scheduler knows more
            sweep_config.hydra.job.num = idx
        sweep_dir = os.path.abspath(str(OmegaConf.select(sweep_config, "hydra.sweep.dir")))
        subdir = str(OmegaConf.select(sweep_config, "hydra.sweep.subdir"))
        jobs.append({"idx": idx, "overrides": list(overrides), "sweep_dir": sweep_dir, "subdir": subdir,
                     "run_dir": os.path.join(sweep_dir, subdir),
                     "params": OmegaConf.to_container(sweep_config.hydra.launcher, resolve=True)})
    return jobs


def point_config(job: Dict[str, Any], common: Dict[str, Any], hydra_overrides: List[str]) -> tuple:
    """(the launcher config of one job's sweep point, where its settings came from, problems)."""
    settings, origin, problems = stage_settings(job["params"])
    overrides = [*hydra_overrides, *filter(passed, job["overrides"]), f"hydra.sweep.dir={quote(job['sweep_dir'])}",
                 f"hydra.sweep.subdir={quote(job['subdir'])}", f"hydra.job.num={job['idx']}"]
    stage = {"kind": "hydra_app", **settings,
             "hydra_app": {**common["hydra_app"], "overrides": overrides, "run_dir": job["run_dir"]}}
    app = common["hydra_app"].get("app") or f"python -m {common['hydra_app'].get('module')}"
    cfg = {"pipeline": {"name": common["name"], "description": f"Hydra multirun of {app}",
                        "code": common["code"], "code_max_mb": common["code_max_mb"],
                        "stages": {common["name"]: stage}},
           "cluster": common["cluster"], "run_root": common["run_root"], "run_name": common["run_name"]}
    return cfg, origin, problems


def translate(errors, name: str, origin: Dict[str, str]) -> List[Any]:
    """The launcher's errors in the words of this plugin's user: a stage key becomes the hydra.launcher
    key it came from."""
    from launcher.errors import ConfigError

    out = []
    prefix = f"pipeline.stages.{name}."
    roots = {"cluster": "hydra.launcher.cluster", "run_root": "hydra.launcher.run_root",
             "run_name": "hydra.launcher.run_name", "pipeline.code": "hydra.launcher.code"}
    for e in errors:
        k = e.key or ""
        new = launcher_key(k[len(prefix):], origin) if k.startswith(prefix) else None
        new = new or next((v + k[len(r):] for r, v in roots.items() if k == r or k.startswith(r + ".")), None)
        out.append(ConfigError(e.message, key=new or k or None))
    return out


def _common(config, params: Dict[str, Any]) -> Dict[str, Any]:
    source, holder = app_source()
    main, extra = config_dirs(config)
    name = stage_name(config.hydra.job.name)
    return {"name": name, "code": code_paths(holder, main, extra, params.get("code") or [], widen="app" in source),
            "code_max_mb": params.get("code_max_mb", 50.0), "cluster": params["cluster"],
            "run_root": os.path.abspath(os.path.expanduser(params["run_root"])), "run_name": params.get("run_name"),
            "hydra_app": {**source, "config_name": config.hydra.job.config_name, "config_path": main,
                          "config_dir": extra, "workdir": str(config.hydra.runtime.cwd)}}


def launch(config, loader, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list:
    from hydra.core.utils import JobReturn, JobStatus, configure_log, setup_globals
    from omegaconf import OmegaConf

    from launcher.run import ops
    from launcher.config.compose import compose_plain
    from launcher.errors import ConfigError, ConfigErrors

    setup_globals()
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    params = OmegaConf.to_container(config.hydra.launcher, resolve=True)
    common = _common(config, params)
    _warn_local(params, list(config.hydra.overrides.hydra))
    hydra_overrides = [o for o in config.hydra.overrides.hydra if passed(o)]
    jobs = job_configs(config, loader, job_overrides, initial_job_idx)
    configs, origin, problems, unplanned = [], {}, [], []
    for job in jobs:
        cfg, where, found = point_config(job, common, hydra_overrides)
        origin.update(where)
        problems += [ConfigError(msg, key=k) for k, msg in found]
        try:
            configs.append(compose_plain(cfg))
        except ConfigError as e:
            unplanned.append(e)
    # the cache lock (launcher/run/cache_lock.py) from the key lookup until the ledger records the jobs
    with (ops.cache_locked(configs) if configs and not unplanned else contextlib.nullcontext()):
        prep = None
        if not unplanned:
            try:
                prep = ops.prepare_configs(configs, [job["overrides"] for job in jobs])
                unplanned = prep.errors
            except ConfigErrors as e:
                unplanned = e.errors
        if problems or unplanned:
            raise ConfigErrors(translate(_unique(problems + unplanned), common["name"], origin))
        log.info(f"launcher_slurm: submitting {len(jobs)} job(s) as one array (cluster {common['cluster']}):")
        for job in jobs:
            log.info(f"\t#{job['idx']} : {' '.join(job['overrides'])} -> {job['run_dir']}")
        run, _ = ops.launch_prepared(prep, list(config.hydra.overrides.task), True, echo=log.info, origin={
            "by": "hydra_plugins.launcher_slurm", "app": common["hydra_app"].get("app") or common["hydra_app"]["module"],
            "argv": list(sys.argv),
            "sweep_dir": jobs[0]["sweep_dir"] if jobs else None, "initial_job_idx": initial_job_idx})
    print(f"launcher_slurm: run {run.id} ({len(jobs)} job(s), outputs in {jobs[0]['sweep_dir'] if jobs else '-'})\n"
          f"  launcher status {run.id}    launcher logs {run.id} {common['name']} --task N    "
          f"launcher cancel {run.id}    launcher resume {run.id}", flush=True)
    returns = []
    for i, job in enumerate(jobs):
        ret = JobReturn(overrides=job["overrides"], working_dir=job["run_dir"], task_name=common["name"],
                        status=JobStatus.COMPLETED)  # submitted: the sweeper reads return_value of each
        ret.return_value = {"run_id": run.id, "run_dir": str(run.path), "task": i, "output_dir": job["run_dir"],
                            "state": "SUBMITTED"}
        returns.append(ret)
    return returns


def _unique(errors: list) -> list:
    seen, out = set(), []
    for e in errors:
        if (e.key, e.message) not in seen:
            seen.add((e.key, e.message))
            out.append(e)
    return out


def _warn_local(params: Dict[str, Any], hydra_overrides: List[str]) -> None:
    """The profile fell to `local` (no hydra.launcher.cluster, no $LAUNCHER_CLUSTER) on a host with Slurm."""
    chosen = os.environ.get("LAUNCHER_CLUSTER") or any(override_key(o) == "hydra.launcher.cluster"
                                                       for o in hydra_overrides)
    if params["cluster"] == "local" and not chosen and shutil.which("sinfo"):
        log.warning("launcher_slurm: no cluster profile chosen, so the jobs run on THIS machine (cluster=local) "
                    "although Slurm is installed here: set hydra.launcher.cluster=<profile> or $LAUNCHER_CLUSTER")
