"""Experiment tracking on the node: what transformers' own integrations need to log one tracked run per
(run, stage, sweep point), from the spec's `tracking` part (launcher/plan/tracking.py spec_part).

- tensorboard: report_to=["tensorboard"], TENSORBOARD_LOGGING_DIR (transformers' TensorBoardCallback reads
  it) = <base>/<point>; the launcher's config and the point's overrides as text, the swept ones as hparams, same folder.
- wandb: report_to=["wandb"], WANDB_MODE, WANDB_DIR=<base>/<point>, WANDB_PROJECT, WANDB_RUN_GROUP (the
  campaign), WANDB_TAGS (the run id), WANDB_NAME; WandbCallback logs TrainingArguments and the model config,
  and params_callback adds the sweep point (wandb 0.31 refuses WANDB_CONFIG_PATHS as one path).
- mlflow: report_to=["mlflow"], MLFLOW_TRACKING_URI (file:<base>/mlruns offline, with MLFLOW_ALLOW_FILE_STORE,
  tracking.uri online), MLFLOW_EXPERIMENT_NAME, MLFLOW_TAGS (JSON: run id, campaign, stage, point, its swept
  overrides), the run name through TrainingArguments.run_name, MLFLOW_RUN_ID: the point's one run, made by
  jobs/adapters/mlflow_store.py with the sweep point and the stage's config as params; MLflowCallback adds
  TrainingArguments and the model config as params and the training's metrics. An evaluation logs its
  scores into its own run per point (TensorBoard, MLflow, W&B alike).
- nanotron: logs to W&B by itself whenever wandb imports (nanotron_environment: the W&B variables, or
  WANDB_MODE=disabled for any other backend); it has no TensorBoard or MLflow writer.

<base> is tracking.dir/<run id>/<stage> when the profile names a shared folder, else
<run>/stages/<stage>/tracking. Standard library only at import: the callers run in the stage's environment,
the launcher's unit tests import it too; torch is imported by the TensorBoard writers alone."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Dict, List, Optional

from jobs import layout, point_configs


def settings(spec: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The stage's tracking (backend, project, mode, dir, ...), or None when it tracks nothing."""
    t = spec.get("tracking") or {}
    return t if t.get("backend") not in (None, "none") else None


def base_dir(spec: Dict[str, Any]) -> Path:
    """The stage's tracking folder (the points' folders are inside)."""
    t = spec["tracking"]
    if t.get("dir"):
        return Path(t["dir"]) / spec["run_id"] / spec["stage"]
    return layout.stage_dir(Path(spec["run_dir"]), spec["stage"]) / "tracking"


def point_dir(spec: Dict[str, Any], point: int) -> Path:
    """One sweep point's tracked run: TensorBoard's event files, W&B's offline run folder."""
    return base_dir(spec) / str(point)


def run_name(spec: Dict[str, Any], point: int) -> str:
    """The tracked run's name: unique per (run, stage, point), readable in a W&B or MLflow table."""
    return f"{spec['run_id']}/{spec['stage']}/p{point}"


def overrides(spec: Dict[str, Any], point: int) -> List[str]:
    """Every override of the point's command line (the sweep's value for it included), [] if unknown."""
    points = spec["tracking"].get("points") or []
    return list(points[point]) if point < len(points) else []


def sweep_point(spec: Dict[str, Any], point: int) -> List[str]:
    """The overrides that tell this point from the sweep's others (seed=2, data=raw); [] outside a sweep."""
    points = spec["tracking"].get("points") or []
    return [o for o in overrides(spec, point) if any(o not in q for q in points)]


def hparams(spec: Dict[str, Any], point: int) -> Dict[str, Any]:
    """The sweep point as parameters: each swept key=value (numbers as numbers), the run id, the stage
    and the point (what a hyperparameter table compares)."""
    out: Dict[str, Any] = {"launcher.run_id": spec["run_id"], "launcher.stage": spec["stage"], "launcher.point": point}
    for o in sweep_point(spec, point):
        k, sep, v = o.lstrip("+~").partition("=")
        if not sep:
            continue
        try:
            out[k] = int(v)
        except ValueError:
            try:
                out[k] = float(v)
            except ValueError:
                out[k] = v
    return out


def report_to(spec: Dict[str, Any]) -> Any:
    """TrainingArguments.report_to: ["tensorboard"] / ["wandb"] / ["mlflow"], or "none"."""
    t = settings(spec)
    return [t["backend"]] if t else "none"


def environment(spec: Dict[str, Any], point: int) -> Dict[str, str]:
    """The variables transformers' callback (and its library) read, for this point's tracked run."""
    t = settings(spec)
    if not t:
        return {}
    b, name, group = t["backend"], run_name(spec, point), spec.get("campaign") or spec["run_id"]
    if b == "tensorboard":
        return {"TENSORBOARD_LOGGING_DIR": str(point_dir(spec, point))}
    if b == "wandb":
        return {"WANDB_MODE": t.get("mode") or "offline", "WANDB_DIR": str(point_dir(spec, point)),
                "WANDB_PROJECT": project(spec), "WANDB_RUN_GROUP": group, "WANDB_NAME": name,
                "WANDB_TAGS": spec["run_id"], "WANDB_JOB_TYPE": spec["stage"], "WANDB_SILENT": "true"}
    if b == "mlflow":
        env = {"MLFLOW_TRACKING_URI": mlflow_uri(spec), "MLFLOW_EXPERIMENT_NAME": project(spec),
               "MLFLOW_TAGS": json.dumps(mlflow_tags(spec, point)), "MLFLOW_FLATTEN_PARAMS": "TRUE"}
        if t.get("mode") != "online":  # MLflow 3 refuses a file store without it (jobs/adapters/mlflow_store.py)
            env["MLFLOW_ALLOW_FILE_STORE"] = "true"
        return env
    raise ValueError(f"tracking.backend {b!r}: no writer on the node (tensorboard, wandb, mlflow)")


def mlflow_uri(spec: Dict[str, Any]) -> str:
    """The stage's MLflow tracking URI: its file store under the run (offline), or tracking.uri (online)."""
    t = spec["tracking"]
    return t["uri"] if t.get("mode") == "online" else f"file:{base_dir(spec) / 'mlruns'}"


def mlflow_tags(spec: Dict[str, Any], point: int) -> Dict[str, str]:
    """The tags of the point's MLflow run; run id, stage and point identify it (mlflow_store.point_run)."""
    return {"launcher.run_id": spec["run_id"], "launcher.campaign": spec.get("campaign") or spec["run_id"],
            "launcher.stage": spec["stage"], "launcher.point": str(point),
            "launcher.sweep_point": " ".join(sweep_point(spec, point))}


def mlflow_run(spec: Dict[str, Any], point: int) -> str:
    """The id of the point's MLflow run, created the first time with its parameters (the sweep point, the
    stage's resolved config) and found again on every later attempt (jobs/adapters/mlflow_store.py)."""
    from jobs.adapters import mlflow_store

    return mlflow_store.point_run(mlflow_uri(spec), project(spec),
                                  run_name(spec, point), mlflow_tags(spec, point), point_config(spec, point),
                                  hparams(spec, point))


def point_config(spec: Dict[str, Any], point: int) -> Dict[str, Any]:
    """The resolved config of this sweep point as the launcher recorded it (<run>/config/points.json)."""
    return point_configs.read(Path(spec["run_dir"]), point)


def write_tensorboard_config(spec: Dict[str, Any], point: int) -> Optional[Path]:
    """The resolved config (text) and the sweep point (hparams) into this point's TensorBoard folder, next
    to the event files transformers' callback writes; None for another backend. Rank 0 only (the caller)."""
    t = settings(spec)
    if not t or t["backend"] != "tensorboard":
        return None
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams as hparams_summary

    folder = point_dir(spec, point)
    params = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in hparams(spec, point).items()}
    with SummaryWriter(log_dir=str(folder)) as w:
        w.add_text("launcher/config", "```\n" + json.dumps(point_config(spec, point), indent=1, default=str) + "\n```")
        w.add_text("launcher/sweep_point", " ".join(sweep_point(spec, point)) or "(not a sweep)")
        w.add_text("launcher/overrides", " ".join(overrides(spec, point)) or "(none)")
        # add_hparams would write into a new subfolder; the summaries go into this folder's run instead
        for summary in hparams_summary(params, {}):
            w.file_writer.add_summary(summary)
    return folder


def write_eval_scalars(spec: Dict[str, Any], point: int, step: int, metrics: Dict[str, Dict[str, Any]],
                       prefix: str = "eval") -> int:
    """One checkpoint's scores as TensorBoard scalars `<prefix>/<task>/<metric>` at its training step (the
    evaluation's tracked run is its own folder, under the evaluate stage; prefix eval_ema for the moving
    average of its weights), as MLflow metrics of the same names in the evaluation's run of this point, or
    into the point's W&B run (offline by default). Returns the scalars written."""
    t = settings(spec)
    if t and t["backend"] == "mlflow":  # into the evaluation's own run of this point
        from jobs.adapters import mlflow_store

        return mlflow_store.log_eval(mlflow_uri(spec), mlflow_run(spec, point), step, metrics, prefix)
    if t and t["backend"] == "wandb":
        return _wandb_eval(spec, point, step, metrics, prefix)
    if not t or t["backend"] != "tensorboard":
        return 0
    from torch.utils.tensorboard import SummaryWriter

    n = 0
    with SummaryWriter(log_dir=str(point_dir(spec, point))) as w:
        for task, ms in metrics.items():
            for m, v in ms.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    w.add_scalar(f"{prefix}/{task}/{m}", float(v), step)
                    n += 1
    return n


def _scalars(metrics: Dict[str, Dict[str, Any]], prefix: str) -> Dict[str, float]:
    return {f"{prefix}/{task}/{m}": float(v) for task, ms in metrics.items() for m, v in ms.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def wandb_run_id(spec: Dict[str, Any], point: int) -> str:
    """A stable W&B run id per (run, stage, point): every attempt of an evaluation resumes the same run
    (W&B ids: letters, digits, - and _; at most 64)."""
    return hashlib.sha1(run_name(spec, point).encode()).hexdigest()[:16]


def _wandb_eval(spec: Dict[str, Any], point: int, step: int, metrics: Dict[str, Dict[str, Any]], prefix: str) -> int:
    """The scores into this point's W&B run of the evaluate stage: opened on the first checkpoint of the
    process with the same names as the trainers' runs (environment()), resumed by id on a later attempt
    (`wandb sync` uploads each attempt's offline folder into that one run), closed at exit by wandb."""
    import wandb

    values = _scalars(metrics, prefix)
    if not values:
        return 0
    run_id = wandb_run_id(spec, point)
    if wandb.run is not None and wandb.run.id != run_id:  # another point's run in this process
        wandb.finish()
    if wandb.run is None:
        env = environment(spec, point)
        point_dir(spec, point).mkdir(parents=True, exist_ok=True)
        wandb.init(id=run_id, resume="allow", mode=env["WANDB_MODE"], dir=env["WANDB_DIR"],
                   project=env["WANDB_PROJECT"], group=env["WANDB_RUN_GROUP"], name=env["WANDB_NAME"],
                   job_type=env["WANDB_JOB_TYPE"], tags=[spec["run_id"]], config=hparams(spec, point))
    wandb.log({**values, "train/global_step": step})
    return len(values)


def nanotron_environment(spec: Dict[str, Any], point: int) -> Dict[str, str]:
    """What a nanotron training's processes get: nanotron (trainer.py, HEAD 2411b02) logs to W&B on its
    logger rank whenever wandb imports, under general.project / general.run of its config (the launcher
    renders the tracked run's names there). So tracking.backend=wandb gives the same W&B variables as a
    transformers training (offline by default), and any other backend WANDB_MODE=disabled: an installed
    wandb would otherwise try to reach its server from an offline compute node."""
    t = settings(spec)
    if t and t["backend"] == "wandb":
        point_dir(spec, point).mkdir(parents=True, exist_ok=True)
        return environment(spec, point)
    return {"WANDB_MODE": "disabled"}


def project(spec: Dict[str, Any]) -> str:
    """The tracked runs' project (W&B project, MLflow experiment): tracking.project, else the campaign,
    else the run id."""
    return (spec.get("tracking") or {}).get("project") or spec.get("campaign") or spec["run_id"]


def trainer_settings(spec: Dict[str, Any], point: int) -> Dict[str, Any]:
    """What a Trainer of this point needs (jobs/adapters/trainer.py, trl.py): {"report_to": TrainingArguments
    .report_to, "run_name": its run_name, "env": the variables to export before the Trainer is built};
    {"report_to": "none"} when the stage tracks nothing."""
    if not settings(spec):
        return {"report_to": "none"}
    out = {"report_to": report_to(spec), "run_name": run_name(spec, point), "env": environment(spec, point)}
    if spec["tracking"]["backend"] == "wandb":  # the sweep point into the run's config (params_callback)
        out["params"] = {**hparams(spec, point), "launcher.overrides": " ".join(overrides(spec, point))}
    return out


def params_callback(trainer: Dict[str, Any]):
    """A transformers TrainerCallback that adds trainer_settings' "params" (the sweep point) to the W&B run's
    config once WandbCallback has started the run (the Trainer calls the report_to callbacks before the
    ones it is given); None when there is nothing to add. Imports transformers: stage environment only."""
    params = (trainer or {}).get("params")
    if not params:
        return None
    from transformers import TrainerCallback

    class LauncherParams(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                import wandb

                if wandb.run is not None:
                    wandb.run.config.update(params, allow_val_change=True)

    return LauncherParams()


def prepare(spec: Dict[str, Any], point: int, log=print) -> Dict[str, Any]:
    """Before a point's training (its first process only): the folder made, the config written
    (TensorBoard), the point's MLflow run found or created (MLFLOW_RUN_ID), a log line; returns
    trainer_settings."""
    s = trainer_settings(spec, point)
    if s["report_to"] == "none":
        return s
    point_dir(spec, point).mkdir(parents=True, exist_ok=True)
    write_tensorboard_config(spec, point)
    t = spec["tracking"]
    if t["backend"] == "mlflow":  # MLflowCallback logs into the point's one run, on every attempt
        s["env"]["MLFLOW_RUN_ID"] = mlflow_run(spec, point)
    log(f"tracking: {t['backend']} ({t.get('mode', 'offline')}) run {s['run_name']} in {point_dir(spec, point)}")
    return s
