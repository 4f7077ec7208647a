"""MLflow (tracking.backend=mlflow) beyond what transformers' MLflowCallback does: one MLflow run per (run,
stage, sweep point), found again after a requeue, its parameters, an evaluation's scores as metrics, and the
copy of a file store to a tracking server (`launcher sync --mlflow-uri`).

- point_run: the point's run in the stage's store, found by its tags (launcher.run_id, launcher.stage,
  launcher.point) or created with them, the run name, the sweep point and the stage's resolved config as
  parameters (params) and the whole resolved config as an artifact (launcher/config.json). A training sets
  MLFLOW_RUN_ID to it, so the callback logs into that run on every attempt instead of starting a new one.
- log_eval: one checkpoint's scores as metrics `<prefix>/<task>/<metric>` at its training step.
- copy_store: every run of a store into another tracking URI (experiments by name; params, tags, each
  metric's whole history, start/end times, status); a run copied before (tag launcher.source_run_id) is
  skipped, so a second sync adds only the new runs.

MLflow 3 refuses a file store unless MLFLOW_ALLOW_FILE_STORE=true (it wants a database; its SQL store
needs the full mlflow, whose pins would move pyarrow in the cpu environment): compute nodes write only
files under the run (principle 4: no database on a network filesystem), so the file store is the
offline writer, and this module sets the variable for a file: URI. mlflow is imported inside the
functions (mlflow-skinny: the stage environment, or the login node's `tracking` extra); standard library
at import. `python -m jobs.adapters.mlflow_store SRC DST` runs copy_store (launcher/run/sync.py, with the
stage's interpreter when the login node has no mlflow) and prints its counts as JSON."""
from __future__ import annotations

import json
import os
import re
import sys
import time
from typing import Any, Dict, Iterable, List

MAX_VALUE = 6000  # MLflow's longest parameter value (mlflow.utils.validation MAX_PARAM_VAL_LENGTH)
BATCH = 100  # parameters per log_batch call (MLflow's MAX_PARAMS_TAGS_PER_BATCH)
METRICS_BATCH = 1000  # metrics per log_batch call (MAX_METRICS_PER_BATCH)
SOURCE_TAG = "launcher.source_run_id"  # on a copied run: the run it was copied from


def client(uri: str):
    """An MlflowClient of `uri`; a file: store is allowed first (module docstring)."""
    if uri.startswith("file:") or "://" not in uri:
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def flatten(value: Any, prefix: str) -> Iterable[tuple]:
    """(dotted key, value) of every leaf of a nested dict/list, under `prefix`."""
    if isinstance(value, dict) and value:
        for k, v in value.items():
            yield from flatten(v, f"{prefix}.{k}")
    elif isinstance(value, list) and value:
        for i, v in enumerate(value):
            yield from flatten(v, f"{prefix}.{i}")
    else:
        yield prefix, value


def param_key(key: str) -> str:
    """A key MLflow accepts (alphanumerics, _ - . space /); anything else becomes _."""
    return re.sub(r"[^\w\-. /]", "_", key)


def params(config: Dict[str, Any], stage: str, sweep: Dict[str, Any]) -> Dict[str, str]:
    """The run's parameters: the sweep point (`sweep.<key>` and launcher.run_id/stage/point), the root's
    plain values and the stage's own resolved config (`config.<key>`, e.g. config.train.optimizer.lr), each
    as MLflow stores it (a string of at most MAX_VALUE characters). Prefixed, so none collides with the
    TrainingArguments MLflowCallback logs (MLflow refuses a parameter logged twice with two values)."""
    out = {(k if k.startswith("launcher.") else f"sweep.{k}"): v for k, v in sweep.items()}
    out.update((f"config.{k}", v) for k, v in config.items() if not isinstance(v, (dict, list)))
    stage_cfg = ((config.get("pipeline") or {}).get("stages") or {}).get(stage) or {}
    out.update(flatten(stage_cfg, "config"))
    return {param_key(k): ("" if v is None else str(v))[:MAX_VALUE] for k, v in out.items()}


def store_lock(uri: str):
    """A lock held by one process of the whole cluster at a time on a file: store (a file beside its folder,
    on the run's shared filesystem: filelock), a no-op for a tracking server (it serializes itself). The
    array's tasks start together, each opens the store (a new FileStore makes its root and its default
    experiment "0": two at once, one fails on 0/meta.yaml) and gets or creates the same experiment: it checks
    the name, then writes a folder under a random id, so two tasks can both pass the check (two experiments
    of one name) or one fails with RESOURCE_ALREADY_EXISTS (seen in CI: "Experiment 'abl-ml' already
    exists")."""
    import contextlib

    if uri.startswith("file:") or "://" not in uri:
        from urllib.parse import urlparse

        from filelock import FileLock

        folder = os.path.abspath(urlparse(uri).path)  # file:/a, file:///a and a plain path alike
        os.makedirs(os.path.dirname(folder), exist_ok=True)
        return FileLock(folder + ".lock")
    return contextlib.nullcontext()


def experiment_id(c, experiment: str) -> str:
    """The id of `experiment` in c's store, created when missing; a concurrent creator's experiment is
    taken instead of failing, as mlflow.set_experiment does (error code RESOURCE_ALREADY_EXISTS)."""
    from mlflow.exceptions import MlflowException

    exp = c.get_experiment_by_name(experiment)
    if exp:
        return exp.experiment_id
    try:
        return c.create_experiment(experiment)
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return c.get_experiment_by_name(experiment).experiment_id


def point_run(uri: str, experiment: str, name: str, tags: Dict[str, str], config: Dict[str, Any],
              sweep: Dict[str, Any]) -> str:
    """The run id of this point's MLflow run (created with its tags, params and config the first time;
    the same run on every later attempt). The array's tasks call it together on one store: the
    store is opened and the experiment got or created under store_lock."""
    from mlflow.entities import Param

    with store_lock(uri):
        c = client(uri)
        exp_id = experiment_id(c, experiment)
    keys = ("launcher.run_id", "launcher.stage", "launcher.point")
    found = c.search_runs([exp_id], " and ".join(f"tags.`{k}` = '{tags[k]}'" for k in keys), max_results=1)
    if found:
        return found[0].info.run_id
    run = c.create_run(exp_id, run_name=name, tags=tags)
    items = [Param(k, v) for k, v in params(config, tags["launcher.stage"], sweep).items()]
    for i in range(0, len(items), BATCH):
        c.log_batch(run.info.run_id, params=items[i:i + BATCH])
    c.log_text(run.info.run_id, json.dumps(config, indent=1, default=str), "launcher/config.json")
    return run.info.run_id


def log_eval(uri: str, run_id: str, step: int, metrics: Dict[str, Dict[str, Any]], prefix: str = "eval") -> int:
    """One checkpoint's scores as metrics at its step (numbers only); the run is marked FINISHED after each
    checkpoint (a later checkpoint logs into it again). Returns the metrics logged."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = [Metric(param_key(f"{prefix}/{task}/{m}"), float(v), now, step) for task, ms in metrics.items()
             for m, v in ms.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    c = client(uri)
    c.log_batch(run_id, metrics=items)
    c.set_terminated(run_id)
    return len(items)


def copy_run(src, dst, run, exp_id: str) -> None:
    """One run into `dst` (an MlflowClient) under experiment exp_id: tags, params, every metric's history."""
    from mlflow.entities import Metric, Param

    tags = {k: v for k, v in run.data.tags.items() if k != "mlflow.runName"}
    new = dst.create_run(exp_id, start_time=run.info.start_time, run_name=run.info.run_name,
                         tags={**tags, SOURCE_TAG: run.info.run_id}).info.run_id
    items = [Param(k, v) for k, v in run.data.params.items()]
    for i in range(0, len(items), BATCH):
        dst.log_batch(new, params=items[i:i + BATCH])
    history: List[Any] = [Metric(m.key, m.value, m.timestamp, m.step) for key in run.data.metrics
                          for m in src.get_metric_history(run.info.run_id, key)]
    for i in range(0, len(history), METRICS_BATCH):
        dst.log_batch(new, metrics=history[i:i + METRICS_BATCH])
    if run.info.status != "RUNNING":
        dst.set_terminated(new, status=run.info.status, end_time=run.info.end_time)


def copy_store(src_uri: str, dst_uri: str) -> Dict[str, int]:
    """Every run of every experiment of src_uri into dst_uri (experiments by name, created when missing);
    runs copied before are skipped. {"copied": n, "skipped": n, "experiments": n}."""
    from mlflow.entities import ViewType

    src = client(src_uri)
    with store_lock(dst_uri):
        dst = client(dst_uri)
    counts = {"copied": 0, "skipped": 0, "experiments": 0}
    for exp in src.search_experiments(view_type=ViewType.ACTIVE_ONLY):
        runs = src.search_runs([exp.experiment_id], max_results=50000)
        if not runs:
            continue
        counts["experiments"] += 1
        with store_lock(dst_uri):
            exp_id = experiment_id(dst, exp.name)
        done = {r.data.tags.get(SOURCE_TAG) for r in dst.search_runs([exp_id], max_results=50000)}
        for run in runs:
            if run.info.run_id in done:
                counts["skipped"] += 1
            else:
                copy_run(src, dst, run, exp_id)
                counts["copied"] += 1
    return counts


if __name__ == "__main__":
    print(json.dumps(copy_store(sys.argv[1], sys.argv[2])))
