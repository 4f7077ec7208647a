"""On the dev Slurm (written, not yet run by its author: the dev cluster was busy): the ablation campaign with
`cluster.tracking.backend=tensorboard` writes one TensorBoard run per sweep point with a loss curve, read
back with TensorBoard's own EventAccumulator in the stage's environment, and the evaluation's scores as
scalars per point. The same campaign with `tracking.backend=mlflow` and `train.ema.decay` (written, not run by its
author either): a file store per stage with one MLflow run per point (params, the loss's history, the
evaluation's scores), read back with MLflow's own client; the moving average beside every checkpoint, scored
beside the raw weights (docs/ema.md)."""
from __future__ import annotations

import json
import subprocess

import pytest

from jobs.demo.corpus import make_corpus

from conftest import CLI

pytestmark = pytest.mark.slow
STEPS, EVERY = 32, 16  # 2 checkpoints per run, 1,024 tokens per step

READ = """
import json, sys
from pathlib import Path
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
out = {}
for folder in sorted(Path(sys.argv[1]).iterdir()):
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    acc.Reload()
    out[folder.name] = {t: sorted(e.step for e in acc.Scalars(t)) for t in acc.Tags()["scalars"]}
print(json.dumps(out))
"""


def read(python, folder) -> dict:
    p = subprocess.run([str(python), "-c", READ, str(folder)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.mark.extended  # ~1.5 min; CI keeps tensorboard per sweep point on cluster=local (test_tracking_local) and the
# campaign on the dev cluster with mlflow (below)
def test_ablation_campaign_writes_a_tensorboard_run_per_point(tmp_path_factory, dev_slurm, cpu_python):
    corpus = tmp_path_factory.mktemp("corpus")
    make_corpus(corpus, docs=600, shards=2, seed=0)
    dcli = CLI(tmp_path_factory.mktemp("runs"), env=dev_slurm)
    dcli("run", "-m", "pipeline=ablation", "data=fineweb_like,raw", "seed=1,2", "cluster=dev", "campaign=abl-tb",
         f"data.source={corpus}", "data.tasks=1", "data.minhash.num_buckets=2", f"pipeline.vars.tokens={STEPS * 1024}",
         f"pipeline.vars.checkpoint_every_tokens={EVERY * 1024}", "pipeline.stages.evaluate.evaluate.poll_s=3",
         "cluster.tracking.backend=tensorboard", timeout=600)
    st = dcli.wait(timeout=1800, poll=5)
    assert st["state"] == "COMPLETED", st
    run = dcli.run_dir()
    train = read(cpu_python, run / "stages" / "train" / "tracking")
    assert sorted(train) == ["0", "1", "2", "3"], train
    for point, tags in train.items():
        assert len(tags.get("train/loss", [])) >= 3 and tags["train/loss"][-1] <= STEPS, (point, tags)
    evals = read(cpu_python, run / "stages" / "evaluate" / "tracking")
    assert sorted(evals) == ["0", "1", "2", "3"], evals
    for point, tags in evals.items():
        assert tags and all(steps == [EVERY, STEPS] for steps in tags.values()), (point, tags)


READ_MLFLOW = """
import json, os, sys
os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
from mlflow.tracking import MlflowClient
c = MlflowClient(sys.argv[1])
print(json.dumps({r.info.run_name: {"params": r.data.params, "metrics": {
    k: [m.step for m in c.get_metric_history(r.info.run_id, k)] for k in r.data.metrics}}
    for e in c.search_experiments() for r in c.search_runs([e.experiment_id])}))
"""


def test_ablation_campaign_mlflow_runs_per_point_and_ema_scored_beside_raw(tmp_path_factory, dev_slurm, cpu_python):
    corpus = tmp_path_factory.mktemp("corpus")
    make_corpus(corpus, docs=600, shards=2, seed=0)
    dcli = CLI(tmp_path_factory.mktemp("runs"), env=dev_slurm)
    dcli("run", "-m", "pipeline=ablation", "data=fineweb_like,raw", "seed=1", "cluster=dev", "campaign=abl-ml",
         f"data.source={corpus}", "data.tasks=1", "data.minhash.num_buckets=2", f"pipeline.vars.tokens={STEPS * 1024}",
         f"pipeline.vars.checkpoint_every_tokens={EVERY * 1024}", "pipeline.stages.evaluate.evaluate.poll_s=3",
         "cluster.tracking.backend=mlflow", "pipeline.stages.train.train.ema.decay=0.9", timeout=600)
    st = dcli.wait(timeout=1800, poll=5)
    assert st["state"] == "COMPLETED", st
    run = dcli.run_dir()
    stores = {}
    for stage in ("train", "evaluate"):
        p = subprocess.run([str(cpu_python), "-c", READ_MLFLOW, f"file:{run}/stages/{stage}/tracking/mlruns"],
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stderr[-3000:]
        stores[stage] = json.loads(p.stdout.strip().splitlines()[-1])
    assert sorted(stores["train"]) == [f"{run.name}/train/p{i}" for i in (0, 1)], stores["train"]
    for r in stores["train"].values():
        assert r["params"]["config.train.ema.decay"] == "0.9" and len(r["metrics"]["loss"]) >= 3, r
    assert sorted(stores["evaluate"]) == [f"{run.name}/evaluate/p{i}" for i in (0, 1)], stores["evaluate"]
    for r in stores["evaluate"].values():
        for prefix in ("eval/", "eval_ema/"):
            scores = {k: v for k, v in r["metrics"].items() if k.startswith(prefix)}
            assert scores and all(v == [EVERY, STEPS] for v in scores.values()), r["metrics"]
    for point in (0, 1):
        for step in (EVERY, STEPS):
            assert json.loads((run / f"stages/train/ckpt/{point}/checkpoint-{step}/ema/ema.json").read_text())[
                "steps"] == step
            assert (run / f"stages/evaluate/evals/{point}/step-{step}-ema.json").is_file()
