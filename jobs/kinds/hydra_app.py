"""kind=hydra_app: the stage's Hydra app, once for this task's sweep point, as a child process in a
session of its own:

    <this python> <code snapshot>/<app> [--config-path P] [--config-name N] [--config-dir D]
        hydra.job.id=<job id> hydra.job.num=<point> <the point's overrides> hydra.run.dir=<its folder>

(a module app, hydra_app.module, through jobs/runtime/run_module.py: `python -m` from the snapshot)

so the app runs under Hydra's own job runtime (HydraConfig, ${hydra:...}, .hydra/config.yaml,
hydra.yaml and overrides.yaml in its folder) in RUN mode. Its folder (hydra_app.run_dir, default the
point's output folder stages/<stage>/out/<point>/) stays across requeues: an app resumes from what it
saved there (or in $LAUNCHER_CHECKPOINT_DIR). The stop request reaches it as command stages get it
(jobs.task run_child): the stop signal (or a SIGTERM) forwarded to its process group; an app that
saves and exits non-zero is requeued. Its environment is every task's (LAUNCHER_*, the parents'
outputs as LAUNCHER_INPUT_<STAGE>, the stage's env); its overrides' folder placeholders ({input:<stage>},
{output}, {run}) are filled in here, as datatrove blocks' are. Standard library only."""
from __future__ import annotations

import sys
from pathlib import Path

from jobs import layout
from jobs.runtime.hydra_overrides import key, quote

reruns_when_complete = False
resolves_hub_references = True


def command(task) -> tuple[list, Path]:
    """(argv, the app's output folder) of this task."""
    h, where = task.payload["hydra_app"], task.spec["hydra_app"]
    code = Path(task.spec["code_dir"])
    run_dir = Path(h["run_dir"]) if h.get("run_dir") else layout.output_dir(task.run_dir, task.stage, task.point)
    if h.get("module"):  # `python -m <module>` from the snapshot, whatever the working directory holds
        argv = [sys.executable, str(code / "jobs" / "runtime" / "run_module.py"), h["module"]]
    else:
        argv = [sys.executable, str(code / where["app"])]
    if where.get("config_path"):
        argv.append(f"--config-path={code / where['config_path']}")
    if h.get("config_name"):
        argv.append(f"--config-name={h['config_name']}")
    if where.get("config_dir"):
        argv.append(f"--config-dir={code / where['config_dir']}")
    # {input:<stage>} and the other folder placeholders: the datatrove stages' data lies in their
    # datatrove folder, not in the stages/<parent>/out/<point>/ of $LAUNCHER_INPUT_<PARENT>
    overrides = layout.Folders(task.spec, task.point).fill(list(h.get("overrides") or []))
    argv.append(f"hydra.job.id={quote(task.job_id)}")
    if not any(key(o) == "hydra.job.num" for o in overrides):  # the plugin gives Hydra's own job number
        argv.append(f"hydra.job.num={task.point}")
    argv += overrides + [f"hydra.run.dir={quote(str(run_dir))}"]
    # the task function's return value, kept by a Hydra callback in the app's own process
    argv.append("+hydra.callbacks.launcher_return={_target_: jobs.runtime.hydra_return.SaveReturn, "
                f"path: {quote(str(return_file(run_dir)))}}}")
    return argv, run_dir


def return_file(run_dir: Path) -> Path:
    return Path(run_dir) / "launcher-return.json"


def run(task) -> dict:
    argv, run_dir = command(task)
    task.log(f"hydra app: {' '.join(argv[1:])}")
    cwd = task.payload["hydra_app"].get("workdir")
    return_file(run_dir).unlink(missing_ok=True)  # an earlier attempt's
    task.run_child(argv, task.environment(), "the Hydra app exited with status {rc}", cwd=Path(cwd) if cwd else None)
    returned = layout.read_json(return_file(run_dir), {}) or {}
    return {"hydra_run_dir": str(run_dir), "overrides": task.payload["hydra_app"].get("overrides") or [],
            **{k: v for k, v in returned.items() if k in ("return_value", "return_repr")}}
