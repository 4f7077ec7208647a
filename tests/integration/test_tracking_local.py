"""On cluster=local: a two-point sweep of the hf training with `tracking.backend=tensorboard` writes one
TensorBoard run per point under <run>/stages/train/tracking/<point>/, read back with TensorBoard's own
event reader (EventAccumulator, in the stage's environment: the launcher's venv has no tensorboard): a loss
curve of several steps per point, the launcher's config, the point's overrides and its swept ones as text, the latter
as hparams. W&B offline runs read from their record log; an MLflow file store per stage read back with MLflow's
own client, and copied by `launcher sync --mlflow-uri` to a second store."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from jobs.adapters import tracking as node_tracking

HELPER = Path(__file__).with_name("hf_train_helper.py")

# Run in the stage's interpreter: {point folder: {"loss_steps": [...], "text": [...]}} as JSON on stdout.
READ_EVENTS = """
import json, sys
from pathlib import Path
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
out = {}
for folder in sorted(Path(sys.argv[1]).iterdir()):
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    loss = acc.Scalars("train/loss") if "train/loss" in tags["scalars"] else []
    texts = {t.removesuffix("/text_summary"): acc.Tensors(t)[0].tensor_proto.string_val[0].decode()
             for t in tags["tensors"] if t.startswith("launcher/")}
    start = plugin_data_pb2.HParamsPluginData.FromString(
        acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]).session_start_info
    hparams = {k: v.string_value or v.number_value for k, v in start.hparams.items()}
    out[folder.name] = {"loss_steps": [e.step for e in loss], "loss": [e.value for e in loss],
                        "scalars": tags["scalars"], "text": texts, "hparams": hparams}
print(json.dumps(out))
"""



@pytest.mark.slow
def test_tensorboard_event_files_hold_a_loss_curve_per_sweep_point(cli, cpu_python, tokenized):
    steps, t = 12, "pipeline.stages.train"
    cli("run", "-m", "pipeline=train", "cluster=local", "model=tiny", "~pipeline.stages.evaluate", "seed=1,2",
        f"pipeline.vars.data={tokenized['a']}", f"pipeline.vars.tokenizer={tokenized['tokenizer']}",
        f"{t}.train.seq_len=32", f"{t}.train.micro_batch=2", f"{t}.train.log_every_steps=2",
        f"pipeline.vars.tokens={steps * 64}", f"pipeline.vars.checkpoint_every_tokens={steps * 64}",
        "cluster.tracking.backend=tensorboard", "campaign=tb-test")
    st = cli.wait(timeout=600)
    assert st["state"] == "COMPLETED", st
    folder = cli.run_dir() / "stages" / "train" / "tracking"
    p = subprocess.run([str(cpu_python), "-c", READ_EVENTS, str(folder)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    runs = json.loads(p.stdout.strip().splitlines()[-1])
    assert sorted(runs) == ["0", "1"], runs  # one tracked run per sweep point
    for point, seed in (("0", 1), ("1", 2)):
        r = runs[point]
        assert r["loss_steps"] == list(range(2, steps + 1, 2)), r  # every logged step: a curve
        assert all(v > 0 for v in r["loss"]) and "train/learning_rate" in r["scalars"], r
        assert r["text"]["launcher/sweep_point"] == f"seed={seed}", r["text"]
        assert f" seed={seed} " in r["text"]["launcher/overrides"] and "campaign=tb-test" in r["text"]["launcher/overrides"]
        assert json.loads(r["text"]["launcher/config"].strip("`\n"))["seed"] == seed
        assert r["hparams"]["seed"] == seed and r["hparams"]["launcher.point"] == int(point), r["hparams"]
        assert r["hparams"]["launcher.run_id"] == cli.run_dir().name
    assert runs["0"]["loss"] != runs["1"]["loss"]  # two seeds, two runs (not one file read twice)


def test_a_backend_whose_package_the_stage_environment_lacks_is_refused_before_submission(cli, tokenized):
    """The training mapped to the `smoke` environment (the standard library and filelock, no mlflow): preflight
    imports the backend's writer there and names the stage, the key and what to do; nothing is submitted."""
    p = cli("run", "pipeline=train", "cluster=local", "~pipeline.stages.evaluate",
            f"pipeline.vars.data={tokenized['a']}", f"pipeline.vars.tokenizer={tokenized['tokenizer']}",
            "cluster.stage_environments.pretrain=smoke", "pipeline.stages.train.tracking.backend=mlflow", check=False)
    assert p.returncode != 0
    err = p.stderr + p.stdout
    assert "pipeline.stages.train.tracking.backend" in err and "tracking.backend=mlflow needs its package" in err, err
    assert "mlflow:start_run not found in environment 'smoke'" in err, err
    assert not any((r / "submissions.jsonl").exists() for r in cli.run_root.iterdir()), "a run was submitted"


@pytest.mark.slow
@pytest.mark.extended  # ~2-3 min (lighteval on two checkpoints); the loss-curve test above is the CI tier's
def test_evaluation_scores_are_scalars_at_each_checkpoints_step(cli, cpu_python, tokenized):
    steps, t = 8, "pipeline.stages.train"
    cli("run", "pipeline=train", "cluster=local", "model=tiny", "cluster.tracking.backend=tensorboard",
        f"pipeline.vars.data={tokenized['a']}", f"pipeline.vars.tokenizer={tokenized['tokenizer']}",
        f"{t}.train.seq_len=32", f"{t}.train.micro_batch=2", f"{t}.train.log_every_steps=2",
        f"pipeline.vars.tokens={steps * 64}", f"pipeline.vars.checkpoint_every_tokens={steps * 32}",
        f"{t}.train.optimizer.warmup_steps=2", "pipeline.stages.evaluate.evaluate.poll_s=1", "pipeline.stages.evaluate.evaluate.max_samples=8")
    st = cli.wait(timeout=900)
    assert st["state"] == "COMPLETED", st
    folder = cli.run_dir() / "stages" / "evaluate" / "tracking"
    p = subprocess.run([str(cpu_python), "-c", READ_EVAL, str(folder / "0")], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    scalars = json.loads(p.stdout.strip().splitlines()[-1])
    assert scalars and all(tag.startswith("eval/") for tag in scalars), scalars
    for tag, steps_seen in scalars.items():
        assert steps_seen == [steps // 2, steps], (tag, steps_seen)  # each checkpoint once, at its step


READ_EVAL = """
import json, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
acc = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0})
acc.Reload()
print(json.dumps({t: sorted(e.step for e in acc.Scalars(t)) for t in acc.Tags()["scalars"]}))
"""


@pytest.mark.slow
@pytest.mark.extended  # ~1-2 min (accelerate + TRL)
def test_alignment_logs_through_trls_trainer(cli, cpu_python, tmp_path):
    """SFT through accelerate and TRL: transformers' TensorBoardCallback in TRL's trainer, from the world's
    process zero, into the sft stage's folder of point 0."""
    from chat_model_helper import make_chat_model

    model = make_chat_model(cpu_python, tmp_path / "model")
    subprocess.run([str(cpu_python), "-m", "jobs.demo.chat", str(tmp_path / "chat"), "--sft", "32", "--dpo", "8"],
                   check=True, capture_output=True, timeout=120)
    cli("run", "pipeline=align", "cluster=local", "~pipeline.stages.dpo", "~pipeline.stages.serve",
        "~pipeline.stages.smoke", f"pipeline.vars.model={model}", f"pipeline.vars.sft_data={tmp_path}/chat/sft.jsonl",
        f"pipeline.vars.dpo_data={tmp_path}/chat/dpo.jsonl", "pipeline.vars.steps=4",
        "pipeline.stages.sft.align.log_every_steps=1", "pipeline.stages.sft.align.micro_batch=2",
        "pipeline.stages.sft.align.chat_template=builtin", "pipeline.stages.sft.tracking.backend=tensorboard")
    assert cli.wait(timeout=300)["state"] == "COMPLETED"
    p = subprocess.run([str(cpu_python), "-c", READ_EVENTS, str(cli.run_dir() / "stages" / "sft" / "tracking")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    runs = json.loads(p.stdout.strip().splitlines()[-1])
    assert list(runs) == ["0"] and runs["0"]["loss_steps"] == [1, 2, 3, 4], runs


@pytest.mark.slow
def test_wandb_offline_runs_hold_the_config_and_the_metrics(cli, cpu_python, tokenized):
    """tracking.backend=wandb, offline (the default): WandbCallback writes one offline run per sweep point
    under <run>/stages/train/tracking/<point>/wandb/offline-run-*/, read back from its record log with wandb's
    own protobuf records: the launcher's names (run, project, campaign as group, run id as tag), the sweep
    point and TrainingArguments in its config, a loss curve in its history (`wandb sync` uploads it)."""
    steps, t = 8, "pipeline.stages.train"
    cli("run", "-m", "pipeline=train", "cluster=local", "model=tiny", "~pipeline.stages.evaluate", "seed=1,2",
        f"pipeline.vars.data={tokenized['a']}", f"pipeline.vars.tokenizer={tokenized['tokenizer']}",
        f"{t}.train.seq_len=32", f"{t}.train.micro_batch=2", f"{t}.train.log_every_steps=2",
        f"{t}.train.optimizer.warmup_steps=2", f"pipeline.vars.tokens={steps * 64}",
        f"pipeline.vars.checkpoint_every_tokens={steps * 64}", "cluster.tracking.backend=wandb",
        "cluster.tracking.project=abl", "campaign=wb-test")
    st = cli.wait(timeout=600)
    assert st["state"] == "COMPLETED", st
    run = cli.run_dir()
    for point, seed in ((0, 1), (1, 2)):
        (offline,) = (run / "stages" / "train" / "tracking" / str(point) / "wandb").glob("offline-run-*")
        (log,) = offline.glob("run-*.wandb")
        p = subprocess.run([str(cpu_python), str(HELPER.with_name("wandb_records.py")), str(log)],
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr[-3000:]
        rec = json.loads(p.stdout.strip().splitlines()[-1])
        assert rec["run"] == {"name": f"{run.name}/train/p{point}", "project": "abl", "group": "wb-test",
                              "tags": [run.name], "job_type": "train"}, rec["run"]
        c = rec["config"]
        assert c["seed"] == seed and c["launcher.point"] == point and c["launcher.run_id"] == run.name, c
        assert c["max_steps"] == steps and f" seed={seed} " in c["launcher.overrides"]  # TrainingArguments too
        curve = [(h["train/global_step"], h["train/loss"]) for h in rec["history"] if "train/loss" in h]
        assert [s for s, _ in curve] == [2, 4, 6, 8] and all(v > 0 for _, v in curve), rec["history"]
    # `launcher sync` would upload both points' offline runs with the stage's interpreter (no network here)
    out = cli("sync", "latest", "--dry-run").stdout
    assert f"would run: {cpu_python} -m wandb sync " in out and out.count("offline-run-") == 2, out


# Run in the stage's interpreter: every run of an MLflow store (argv[1], a tracking URI) as JSON on stdout.
READ_MLFLOW = """
import json, os, sys
os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
from mlflow.tracking import MlflowClient
c = MlflowClient(sys.argv[1])
out = []
for e in c.search_experiments():
    for r in c.search_runs([e.experiment_id]):
        out.append({"experiment": e.name, "name": r.info.run_name, "status": r.info.status, "tags": r.data.tags,
                    "params": r.data.params, "artifacts": [a.path for a in c.list_artifacts(r.info.run_id, "launcher")],
                    "history": {k: [(m.step, m.value) for m in c.get_metric_history(r.info.run_id, k)]
                                for k in r.data.metrics}})
print(json.dumps(sorted(out, key=lambda r: r["name"])))
"""


def read_mlflow(cpu_python, uri: str) -> list:
    p = subprocess.run([str(cpu_python), "-c", READ_MLFLOW, uri], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.extended  # ~3 min; the CI tier's mlflow acceptance is test_tracking_slurm (an ablation campaign)
def test_mlflow_file_store_one_run_per_point_with_params_and_metrics_then_synced(cli, cpu_python, tokenized, tmp_path):
    """tracking.backend=mlflow, offline: a file store per stage under the run (MLFLOW_ALLOW_FILE_STORE, set by the
    node side), read back with MLflow's own client: one run per sweep point and stage, tagged with the run id,
    the sweep point and the stage's config as params beside TrainingArguments, the loss's history, the
    evaluation's scores as metrics at the checkpoint's step. `launcher sync --mlflow-uri` copies every run to a
    second store (the launcher's venv has no mlflow: the stage's interpreter copies), once."""
    steps, t = 8, "pipeline.stages.train"
    cli("run", "-m", "pipeline=train", "cluster=local", "model=tiny", "seed=1,2",
        f"pipeline.vars.data={tokenized['a']}", f"pipeline.vars.tokenizer={tokenized['tokenizer']}",
        f"{t}.train.seq_len=32", f"{t}.train.micro_batch=2", f"{t}.train.log_every_steps=2",
        f"{t}.train.optimizer.warmup_steps=2", f"pipeline.vars.tokens={steps * 64}",
        f"pipeline.vars.checkpoint_every_tokens={steps * 64}", "pipeline.stages.evaluate.evaluate.poll_s=1",
        "pipeline.stages.evaluate.evaluate.max_samples=8", "cluster.tracking.backend=mlflow", "campaign=ml-test")
    st = cli.wait(timeout=900)
    assert st["state"] == "COMPLETED", st
    run = cli.run_dir()
    train = read_mlflow(cpu_python, f"file:{run}/stages/train/tracking/mlruns")
    assert [r["name"] for r in train] == [f"{run.name}/train/p0", f"{run.name}/train/p1"], train  # one per point
    for point, (r, seed) in enumerate(zip(train, (1, 2))):
        assert r["experiment"] == "ml-test" and r["status"] == "FINISHED", r
        assert r["tags"]["launcher.run_id"] == run.name and r["tags"]["launcher.point"] == str(point)
        assert r["tags"]["launcher.sweep_point"] == f"seed={seed}", r["tags"]
        p = r["params"]
        assert p["sweep.seed"] == p["config.seed"] == p["config.train.seed"] == str(seed), p  # point + config
        assert p["launcher.run_id"] == run.name and p["config.train.seq_len"] == "32" and p["max_steps"] == str(steps)
        assert r["artifacts"] == ["launcher/config.json"]
        assert [s for s, _ in r["history"]["loss"]] == [2, 4, 6, 8], r["history"]  # a curve, one run on all attempts
    assert train[0]["history"]["loss"] != train[1]["history"]["loss"]
    evals = read_mlflow(cpu_python, f"file:{run}/stages/evaluate/tracking/mlruns")
    assert [r["name"] for r in evals] == [f"{run.name}/evaluate/p0", f"{run.name}/evaluate/p1"], evals
    for r in evals:
        scores = {k: v for k, v in r["history"].items() if k.startswith("eval/")}
        assert scores and all(v and [s for s, _ in v] == [steps] for v in scores.values()), r["history"]
        assert r["params"]["sweep.seed"] in ("1", "2") and "config.evaluate.max_samples" in r["params"]

    server = f"file:{tmp_path}/server"
    out = cli("sync", "latest", "--mlflow-uri", server).stdout
    assert out.count("2 run(s) copied, 0 copied before") == 2, out
    copied = read_mlflow(cpu_python, server)
    assert sorted(r["name"] for r in copied) == sorted(r["name"] for r in evals + train), copied
    by_name = {r["name"]: r for r in copied}
    for r in train + evals:
        c = by_name[r["name"]]
        assert c["history"] == r["history"] and c["params"] == r["params"] and c["status"] == r["status"]
        assert c["tags"]["launcher.run_id"] == run.name and c["experiment"] == "ml-test"
    again = cli("sync", "latest", "--mlflow-uri", server).stdout
    assert again.count("0 run(s) copied, 2 copied before") == 2, again


POINT_RUN_TWICE = """
import json, sys
from jobs.adapters.mlflow_store import point_run
tags = {"launcher.run_id": "r1", "launcher.stage": "train", "launcher.point": "0", "launcher.sweep_point": "seed=1"}
ids = [point_run(sys.argv[1], "exp", "r1/train/p0", tags, {"seed": 1}, {"seed": 1}) for _ in range(2)]
other = point_run(sys.argv[1], "exp", "r1/train/p1", {**tags, "launcher.point": "1"}, {"seed": 2}, {"seed": 2})
print(json.dumps(ids + [other]))
"""


def test_a_requeued_attempt_finds_its_points_mlflow_run_again(cpu_python, tmp_path):
    """jobs/adapters/mlflow_store.py point_run, as each attempt of a training calls it before MLflowCallback
    starts (MLFLOW_RUN_ID): the second call returns the first call's run, another point gets its own."""
    from conftest import ROOT

    p = subprocess.run([str(cpu_python), "-c", POINT_RUN_TWICE, f"file:{tmp_path}/mlruns"], capture_output=True,
                       text=True, timeout=120, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert p.returncode == 0, p.stderr[-3000:]
    first, again, other = json.loads(p.stdout.strip().splitlines()[-1])
    assert first == again != other


@pytest.mark.slow
def test_a_requeued_training_logs_on_into_its_one_mlflow_run(cpu_python, tokenized, tmp_path):
    """A training stopped at step 4 (the stop signal's checkpoint) and resumed in a new process, as a requeue
    runs it, with tracking.backend=mlflow: one MLflow run for the point, its loss history from both attempts
    (MLflowCallback reattached through MLFLOW_RUN_ID, TrainingArguments logged twice with the same values)."""
    from hf_train_helper import tiny_train

    spec = {"run_id": "r1", "run_dir": str(tmp_path / "run"), "stage": "train", "campaign": "rq",
            "tracking": {"backend": "mlflow", "mode": "offline", "points": [["seed=1"]]}}
    job = {"kind": "train", "name": "T", "train": tiny_train(steps=8, every=4, seq_len=32, micro_batch=2, log_every=2),
           "tokenizer": tokenized["tokenizer"], "data": {tokenized["a"]: 1.0}, "ckpt": str(tmp_path / "ckpt"),
           "out": str(tmp_path / "out"), "tracking_spec": spec}
    env = {**__import__("os").environ, "HF_HUB_OFFLINE": "1", "SLURM_CPUS_PER_TASK": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    for attempt, extra in enumerate(({"stop_at": 4}, {"restart": 1})):
        (tmp_path / f"{attempt}.json").write_text(json.dumps([{**job, **extra}]))
        p = subprocess.run([str(cpu_python), str(HELPER), "run", str(tmp_path / f"{attempt}.json"),
                            str(tmp_path / f"{attempt}.out.json")], capture_output=True, text=True, timeout=600, env=env)
        assert p.returncode == 0, p.stderr[-4000:]
        res = json.loads((tmp_path / f"{attempt}.out.json").read_text())["T"]
        assert res.get("requeue") if attempt == 0 else "result" in res, res
    runs = read_mlflow(cpu_python, f"file:{tmp_path}/run/stages/train/tracking/mlruns")
    assert [r["name"] for r in runs] == ["r1/train/p0"], runs  # one run over both attempts
    assert [s for s, _ in runs[0]["history"]["loss"]] == [2, 4, 6, 8], runs[0]["history"]
    assert runs[0]["status"] == "FINISHED" and runs[0]["params"]["launcher.point"] == "0"


def test_evaluation_scores_go_into_the_points_wandb_run_offline(tmp_path, cpu_python):
    """write_eval_scalars with backend=wandb (the stage's interpreter, wandb offline): one offline run per
    point with a stable id, its scores at the checkpoint's step, readable by wandb's own records."""
    spec = {"run_id": "abl-20261201-1", "run_dir": str(tmp_path / "run"), "stage": "train", "campaign": "nightly",
            "tracking": {"mode": "offline", "points": [["seed=1"]], "backend": "wandb", "project": "abl"}}
    prog = ("import json, sys; from jobs.adapters import tracking; spec = json.loads(sys.argv[1]);"
            "a = tracking.write_eval_scalars(spec, 0, 4, {'demo|clean_bpb': {'bpb': 2.5, 'note': 'x'}});"
            "b = tracking.write_eval_scalars(spec, 0, 8, {'demo|clean_bpb': {'bpb': 2.25}}, prefix='eval_ema');"
            "print(a, b)")
    root = HELPER.parents[2]
    p = subprocess.run([str(cpu_python), "-c", prog, json.dumps(spec)], capture_output=True, text=True, timeout=300,
                       env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root), "HOME": str(tmp_path)})
    assert p.returncode == 0 and p.stdout.split()[-2:] == ["1", "1"], p.stdout[-2000:] + p.stderr[-3000:]
    (offline,) = (tmp_path / "run/stages/train/tracking/0/wandb").glob("offline-run-*")
    assert offline.name.endswith(node_tracking.wandb_run_id(spec, 0))
    (log,) = offline.glob("run-*.wandb")
    r = subprocess.run([str(cpu_python), str(root / "tests/integration/wandb_records.py"), str(log)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    rec = json.loads(r.stdout.strip().splitlines()[-1])
    assert rec["run"]["project"] == "abl" and rec["run"]["name"].endswith("/train/p0")
    scores = [(h["train/global_step"], h.get("eval/demo|clean_bpb/bpb"), h.get("eval_ema/demo|clean_bpb/bpb"))
              for h in rec["history"]]
    assert scores == [(4, 2.5, None), (8, None, 2.25)], rec["history"]


TOGETHER = """
import json, sys, time
from jobs.adapters import mlflow_store
import mlflow.tracking  # imported before the start line: the processes race on the store, not on imports
what, uri, start, i = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
while time.time() < start:
    pass
if what == "point":
    tags = {"launcher.run_id": "r1", "launcher.stage": "train", "launcher.point": str(i), "launcher.sweep_point": ""}
    print(mlflow_store.point_run(uri, "exp", f"r1/train/p{i}", tags, {"seed": i}, {"seed": i}))
else:
    print(json.dumps(mlflow_store.copy_store(sys.argv[5], uri)))
"""


def _together(cpu_python, what: str, uri: str, n: int, *extra) -> list:
    """n processes calling one mlflow_store function on one store at the same instant, as an array's tasks
    do; each one's exit status and stderr."""
    import time

    from conftest import ROOT

    start = time.time() + 8  # after every interpreter has imported mlflow
    procs = [subprocess.Popen([str(cpu_python), "-c", TOGETHER, what, uri, str(start), str(i), *(e(i) for e in extra)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                              env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}) for i in range(n)]
    return [(p.wait(timeout=180), p.stderr.read()[-2000:]) for p in procs]


def _experiments_named(store: Path, name: str) -> int:
    """Experiment folders of a file store with this name (two would be the race's other outcome)."""
    return sum(f"name: {name}\n" in f.read_text() for f in store.glob("*/meta.yaml"))


def test_an_arrays_tasks_starting_together_share_one_experiment(cpu_python, tmp_path):
    """Every task of the array gets or creates the stage's experiment at once (mlflow_store.store_lock):
    none fails with RESOURCE_ALREADY_EXISTS (CI at 3660083: "Experiment 'abl-ml' already exists", one
    training of two) and the store ends with one experiment holding one run per point."""
    store = f"file:{tmp_path}/mlruns"
    ends = _together(cpu_python, "point", store, 6)
    assert all(rc == 0 for rc, _ in ends), ends
    runs = read_mlflow(cpu_python, store)
    assert {r["experiment"] for r in runs} == {"exp"} and len(runs) == 6, runs
    assert _experiments_named(tmp_path / "mlruns", "exp") == 1


def test_two_syncs_into_one_store_at_once_create_the_experiment_once(cpu_python, tmp_path):
    """The sibling: `launcher sync --mlflow-uri` of two stores (two stages, two runs) into one file store at
    the same instant; copy_store gets or creates each experiment by name under the same lock."""
    from conftest import ROOT

    for i in range(4):
        tags = {"launcher.run_id": f"r{i}", "launcher.stage": "train", "launcher.point": "0", "launcher.sweep_point": ""}
        p = subprocess.run([str(cpu_python), "-c", "import sys; from jobs.adapters.mlflow_store import point_run; "
                            "point_run(sys.argv[1], 'exp', 'p', %r, {}, {})" % tags, f"file:{tmp_path}/src{i}"],
                           capture_output=True, text=True, timeout=120, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
        assert p.returncode == 0, p.stderr[-2000:]
    ends = _together(cpu_python, "copy", f"file:{tmp_path}/dst", 4, lambda i: f"file:{tmp_path}/src{i}")
    assert all(rc == 0 for rc, _ in ends), ends
    runs = read_mlflow(cpu_python, f"file:{tmp_path}/dst")
    assert {r["experiment"] for r in runs} == {"exp"} and len(runs) == 4, runs
    assert _experiments_named(tmp_path / "dst", "exp") == 1
