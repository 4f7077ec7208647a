"""Experiment tracking: the plan-time checks of `cluster.tracking` / a stage's `tracking` (launcher/plan/tracking.py,
each bad input named by stage and key), what the plan hands the tasks (StagePlan.tracking, the spec, not the
hash), the preflight target, and what the node builds from it (jobs/adapters/tracking.py: report_to, the
variables transformers' callbacks read, the parameters)."""
import json

import pytest

from jobs.adapters import tracking as node
from launcher.plan import tracking
from launcher.config.compose import compose
from launcher.errors import ConfigErrors
from launcher.plan.model import build_plan
from launcher.plan.render import stage_spec

from plan_errors import S, TRAIN, errors_of


def plan_of(*overrides, points=None):
    cfgs = [compose(list(overrides) + list(p)) for p in (points or [[]])]
    return build_plan(cfgs, points or [[]])


# -- checks: each bad input names the stage and the key ----------------------------------------------------
def test_an_unknown_backend_on_a_stage_names_the_stage_and_key():
    errs = errors_of(*TRAIN, f"{S}.train.tracking.backend=tensorbord")
    msg = errs[("train", f"{S}.train.tracking.backend")]
    assert "unknown tracking backend 'tensorbord'" in msg and "tensorboard | wandb | mlflow | none" in msg


def test_an_unknown_backend_or_mode_in_the_profile_names_the_cluster_key():
    errs = errors_of(*TRAIN, "cluster.tracking.backend=neptune", "cluster.tracking.mode=sometimes")
    assert "unknown tracking backend 'neptune'" in errs[(None, "cluster.tracking.backend")]
    assert "unknown tracking mode 'sometimes'" in errs[(None, "cluster.tracking.mode")]


def test_an_unknown_mode_on_a_stage():
    errs = errors_of(*TRAIN, f"{S}.train.tracking.backend=wandb", f"{S}.train.tracking.mode=live")
    assert "unknown tracking mode 'live'" in errs[("train", f"{S}.train.tracking.mode")]


def test_online_on_a_profile_whose_compute_nodes_are_offline():
    errs = errors_of(*TRAIN, f"{S}.train.tracking.backend=wandb", f"{S}.train.tracking.mode=online")
    msg = errs[("train", f"{S}.train.tracking.mode")]
    assert "compute_offline: true" in msg and "cluster 'local'" in msg and "mode=offline" in msg
    # the profile's own default mode is named where it came from
    errs = errors_of(*TRAIN, "cluster.tracking.backend=mlflow", "cluster.tracking.mode=online")
    assert "compute_offline" in errs[("train", "cluster.tracking.mode")]


def test_online_without_the_api_key_name_among_the_secrets():
    online = [*TRAIN, "cluster.compute_offline=false", f"{S}.train.tracking.backend=wandb",
              f"{S}.train.tracking.mode=online"]
    msg = errors_of(*online)[("train", f"{S}.train.tracking.api_key")]
    assert "WANDB_API_KEY" in msg and "cluster.secrets" in msg
    plan_of(*online, "cluster.secrets=[WANDB_API_KEY]")  # named: accepted (the value is preflight's question)
    errs = errors_of(*online, "cluster.secrets=[WANDB_API_KEY]", f"{S}.train.tracking.api_key=TEAM_WANDB_KEY")
    assert "TEAM_WANDB_KEY" in errs[("train", f"{S}.train.tracking.api_key")]


def test_mlflow_online_needs_its_key_and_its_server():
    errs = errors_of(*TRAIN, "cluster.compute_offline=false", "cluster.tracking.backend=mlflow",
                     "cluster.tracking.mode=online")
    assert "MLFLOW_TRACKING_TOKEN" in errs[("train", "cluster.tracking.api_key")]
    assert "tracking.uri" in errs[("train", "cluster.tracking.uri")]


def test_tensorboard_online_means_nothing():
    errs = errors_of(*TRAIN, "cluster.compute_offline=false", f"{S}.train.tracking.backend=tensorboard",
                     f"{S}.train.tracking.mode=online")
    assert "event files only" in errs[("train", f"{S}.train.tracking.mode")]


def test_a_kind_without_a_tracker_refuses_a_backend_set_on_the_stage_but_not_the_profiles_default():
    errs = errors_of("pipeline=smoke", "cluster=local", f"{S}.shards.tracking.backend=tensorboard")
    assert "logs to no experiment tracker" in errs[("shards", f"{S}.shards.tracking.backend")]
    plan = plan_of("pipeline=smoke", "cluster=local", "cluster.tracking.backend=wandb")
    assert all(s.tracking == {} for s in plan.stages.values())
    errs = errors_of(*TRAIN, f"{S}.train.train.backend=nanotron", "~pipeline.stages.evaluate",
                     f"{S}.train.tracking.backend=mlflow")  # nanotron: W&B only
    assert "logs to wandb only" in errs[("train", f"{S}.train.tracking.backend")]


def test_the_nanotron_backend_logs_to_wandb_only():
    errs = errors_of(*TRAIN, f"{S}.train.train.backend=nanotron", f"{S}.train.tracking.backend=tensorboard",
                     "~pipeline.stages.evaluate")
    assert "logs to wandb only" in errs[("train", f"{S}.train.tracking.backend")]


def test_nanotron_gets_the_wandb_variables_and_its_project_or_wandb_disabled(tmp_path):
    """nanotron logs to W&B by itself whenever wandb imports (trainer.py): the tracked run's variables with
    backend=wandb, WANDB_MODE=disabled otherwise (an offline node would hang on an online init); its
    rendered config's general.project is the tracked project."""
    from launcher.kinds.pretrain import nanotron_configs

    env = node.nanotron_environment(spec_of(tmp_path, backend="wandb", project="abl"), 1)
    assert env["WANDB_MODE"] == "offline" and env["WANDB_PROJECT"] == "abl" and env["WANDB_NAME"].endswith("/train/p1")
    assert (tmp_path / "run/stages/train/tracking/1").is_dir()
    assert node.nanotron_environment(spec_of(tmp_path, backend="none"), 0) == {"WANDB_MODE": "disabled"}
    assert node.nanotron_environment({"run_id": "r", "stage": "s"}, 0) == {"WANDB_MODE": "disabled"}
    plan = plan_of("pipeline=pretrain", "cluster=local", "model=1b", "pipeline.vars.data=/shared/tok",
                   "pipeline.vars.tokenizer=/shared/tok/tokenizer.json", f"{S}.train.tracking.backend=wandb",
                   f"{S}.train.tracking.project=abl")
    (yaml_text,) = nanotron_configs(plan, plan.stages["train"], tmp_path / "run", "r1").values()
    assert "project: abl\n" in yaml_text and "run: r1.train.0\n" in yaml_text


def test_a_sweep_over_tracking_is_refused():
    points = [[f"{S}.train.tracking.backend=tensorboard"], [f"{S}.train.tracking.backend=none"]]
    with pytest.raises(ConfigErrors) as e:
        plan_of(*TRAIN, points=points)
    (err,) = [x for x in e.value.errors if x.key == f"{S}.train.tracking"]
    assert err.stage == "train" and "differs between sweep points" in err.message


# -- what the plan and the spec carry ----------------------------------------------------------------------
def test_a_stage_overrides_the_profile_key_by_key_and_the_hash_is_unchanged():
    plain = plan_of(*TRAIN)
    plan = plan_of(*TRAIN, "cluster.tracking.backend=tensorboard", "cluster.tracking.project=abl",
                   f"{S}.evaluate.tracking.project=evals", "campaign=nightly")
    assert plan.stages["train"].tracking == {"backend": "tensorboard", "project": "abl", "mode": "offline"}
    assert plan.stages["evaluate"].tracking["project"] == "evals"
    assert {n: s.hash for n, s in plan.stages.items()} == {n: s.hash for n, s in plain.stages.items()}
    assert plain.stages["train"].tracking == {}
    # no project: the campaign
    plan = plan_of(*TRAIN, f"{S}.train.tracking.backend=wandb", "campaign=nightly")
    assert plan.stages["train"].tracking == {"backend": "wandb", "project": "nightly", "mode": "offline",
                                             "api_key": "WANDB_API_KEY"}


def test_the_spec_carries_the_settings_run_id_and_every_points_overrides(tmp_path):
    points = [["seed=1"], ["seed=2"]]
    plan = plan_of(*TRAIN, f"{S}.train.tracking.backend=tensorboard", points=points)
    spec = stage_spec(plan, plan.stages["train"], tmp_path, "train-1")
    assert spec["tracking"] == {"backend": "tensorboard", "mode": "offline", "run_id": "train-1",
                                "points": [["seed=1"], ["seed=2"]]}
    assert "tracking" not in stage_spec(plan_of(*TRAIN), plan.stages["evaluate"], tmp_path, "train-1")


def test_preflight_resolves_the_backends_writer_in_the_stage_environment():
    assert tracking.target("train", {"backend": "wandb"}) == [(f"{S}.train.tracking.backend", "wandb:init")]
    assert tracking.target("train", {}) == []
    from launcher.plan.preflight import stage_targets

    plan = plan_of(*TRAIN, f"{S}.train.tracking.backend=mlflow")
    assert (f"{S}.train.tracking.backend", "mlflow:start_run") in stage_targets(plan.stages["train"])


def test_launcher_plan_says_where_each_tracked_stage_logs():
    assert tracking.describe("train", {}) == []
    assert tracking.describe("train", {"backend": "tensorboard", "mode": "offline", "project": "abl"}) == [
        "train: tracking tensorboard (offline, project abl), one run per sweep point: <run>/stages/train/tracking/<point>/"]
    assert tracking.describe("sft", {"backend": "mlflow", "mode": "offline", "dir": "/shared/ml"})[0].endswith(
        "/shared/ml/<run id>/sft/mlruns (file store)")


# -- the node side: pure functions of the spec -------------------------------------------------------------
def spec_of(tmp_path, **t):
    return {"run_id": "abl-20261201-1", "run_dir": str(tmp_path / "run"), "stage": "train", "campaign": "nightly",
            "tracking": {"mode": "offline", "points": [["data=raw", "seed=1"], ["data=fineweb_like", "seed=2"]], **t}}


def test_no_tracking_reports_to_none(tmp_path):
    assert node.trainer_settings({"run_id": "r", "stage": "s"}, 0) == {"report_to": "none"}
    assert node.environment(spec_of(tmp_path, backend="none"), 0) == {}


def test_tensorboard_one_folder_per_point_under_the_run_or_the_shared_dir(tmp_path):
    spec = spec_of(tmp_path, backend="tensorboard")
    s = node.trainer_settings(spec, 1)
    assert s == {"report_to": ["tensorboard"], "run_name": "abl-20261201-1/train/p1",
                 "env": {"TENSORBOARD_LOGGING_DIR": str(tmp_path / "run" / "stages" / "train" / "tracking" / "1")}}
    shared = spec_of(tmp_path, backend="tensorboard", dir="/shared/tb")
    assert node.environment(shared, 0) == {"TENSORBOARD_LOGGING_DIR": "/shared/tb/abl-20261201-1/train/0"}


def test_wandb_offline_variables(tmp_path):
    env = node.environment(spec_of(tmp_path, backend="wandb", project="abl"), 0)
    assert env == {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path / "run/stages/train/tracking/0"),
                   "WANDB_PROJECT": "abl", "WANDB_RUN_GROUP": "nightly", "WANDB_NAME": "abl-20261201-1/train/p0",
                   "WANDB_TAGS": "abl-20261201-1", "WANDB_JOB_TYPE": "train", "WANDB_SILENT": "true"}
    params = node.trainer_settings(spec_of(tmp_path, backend="wandb"), 1)["params"]
    assert params["data"] == "fineweb_like" and params["seed"] == 2 and params["launcher.point"] == 1
    assert "params" not in node.trainer_settings(spec_of(tmp_path, backend="tensorboard"), 1)


def test_mlflow_file_store_under_the_run_and_tags(tmp_path):
    env = node.environment(spec_of(tmp_path, backend="mlflow"), 1)
    assert env["MLFLOW_TRACKING_URI"] == f"file:{tmp_path}/run/stages/train/tracking/mlruns"
    assert env["MLFLOW_EXPERIMENT_NAME"] == "nightly"  # no project: the campaign
    tags = json.loads(env["MLFLOW_TAGS"])
    assert tags == {"launcher.run_id": "abl-20261201-1", "launcher.campaign": "nightly", "launcher.stage": "train",
                    "launcher.point": "1", "launcher.sweep_point": "data=fineweb_like seed=2"}
    assert env["MLFLOW_ALLOW_FILE_STORE"] == "true"  # MLflow 3 refuses a file store without it
    online = node.environment(spec_of(tmp_path, backend="mlflow", mode="online", uri="https://ml.example"), 0)
    assert online["MLFLOW_TRACKING_URI"] == "https://ml.example" and "MLFLOW_ALLOW_FILE_STORE" not in online


def test_mlflow_params_are_the_sweep_point_and_the_stages_config_prefixed():
    from jobs.adapters.mlflow_store import params

    config = {"seed": 2, "campaign": "c", "cluster": {"name": "local"},
              "pipeline": {"stages": {"train": {"train": {"optimizer": {"lr": 1e-3}, "data": [{"folder": "/d"}]},
                                                "after": {}, "note": "x" * 7000}}}}
    p = params(config, "train", {"launcher.point": 1, "seed": 2, "pipeline.vars.lr[0]": 3e-4})
    assert p["launcher.point"] == "1" and p["sweep.seed"] == "2" and p["sweep.pipeline.vars.lr_0_"] == "0.0003"
    assert p["config.seed"] == "2" and p["config.train.optimizer.lr"] == "0.001"
    assert p["config.train.data.0.folder"] == "/d" and p["config.after"] == "{}" and len(p["config.note"]) == 6000
    assert not any(k.startswith("config.cluster") for k in p)  # the stage's config, not the whole profile
    assert not any(k in p for k in ("seed", "learning_rate"))  # MLflowCallback's own (TrainingArguments) stay apart


def test_the_sweep_point_as_parameters(tmp_path):
    spec = spec_of(tmp_path, backend="tensorboard")
    spec["tracking"]["points"] = [["cluster=local", "data=raw", "seed=1", "pipeline.vars.lr=3e-4", "+x=y"],
                                  ["cluster=local", "data=raw", "seed=2", "pipeline.vars.lr=1e-3", "+x=z"]]
    assert node.sweep_point(spec, 0) == ["seed=1", "pipeline.vars.lr=3e-4", "+x=y"]  # what is the same is no axis
    assert node.hparams(spec, 0) == {"launcher.run_id": "abl-20261201-1", "launcher.stage": "train",
                                     "launcher.point": 0, "seed": 1, "pipeline.vars.lr": 3e-4, "x": "y"}
    assert node.overrides(spec, 5) == node.sweep_point(spec, 5) == []  # a point past the list: none
    spec["tracking"]["points"] = [["cluster=local", "seed=1"]]
    assert node.sweep_point(spec, 0) == [] and node.overrides(spec, 0) == ["cluster=local", "seed=1"]


# -- launcher sync -----------------------------------------------------------------------------------------
def test_sync_finds_each_wandb_stages_offline_runs_and_uses_the_stages_python(tmp_path, capsys):
    from launcher.cli import main
    from launcher.run.sync import sync_commands

    plan = plan_of(*TRAIN, f"{S}.train.tracking.backend=wandb")
    run = tmp_path / "r1"
    (run / "stages" / "train" / "tracking" / "0" / "wandb" / "offline-run-20261201_1-abc").mkdir(parents=True)
    (run / "stages" / "train" / "tracking" / "0" / "wandb" / "latest-run").mkdir()  # wandb's link: not a run
    (run / "plan.json").write_text(json.dumps(plan.to_json()))
    (run / "run.json").write_text(json.dumps({"id": "r1", "created": 1}))
    assert main(["sync", str(run), "--dry-run"]) == 0
    out = capsys.readouterr().out
    python = plan.stages["train"].environment["python"]
    assert f"would run: {python} -m wandb sync {run}/stages/train/tracking/0/wandb/offline-run-20261201_1-abc" in out
    assert sync_commands([{"backend": "wandb", "python": "p", "paths": []}]) == []  # nothing offline yet: no call
    plain = tmp_path / "r2"
    plain.mkdir()
    (plain / "plan.json").write_text(json.dumps(plan_of(*TRAIN).to_json()))
    (plain / "run.json").write_text(json.dumps({"id": "r2", "created": 1}))
    assert main(["sync", str(plain)]) == 0 and "nothing to sync" in capsys.readouterr().out


def test_sync_lists_mlflow_stores_and_needs_mlflow_somewhere_to_copy_them(tmp_path, capsys, monkeypatch):
    from launcher.run import sync
    from launcher.cli import main

    plan = plan_of(*TRAIN, f"{S}.train.tracking.backend=mlflow")
    run = tmp_path / "r1"
    (run / "stages" / "train" / "tracking" / "mlruns").mkdir(parents=True)
    (run / "plan.json").write_text(json.dumps(plan.to_json()))
    (run / "run.json").write_text(json.dumps({"id": "r1", "created": 1}))
    assert main(["sync", str(run)]) == 0
    assert "not copied (give --mlflow-uri URI" in capsys.readouterr().out
    assert main(["sync", str(run), "--dry-run", "--mlflow-uri", "https://ml.example"]) == 0
    assert f"{run}/stages/train/tracking/mlruns: would copy to https://ml.example" in capsys.readouterr().out
    monkeypatch.setattr(sync.importlib.util, "find_spec", lambda name: None)  # no mlflow on this machine
    with pytest.raises(sync.LauncherError) as e:
        sync.copy_mlflow(run / "stages/train/tracking/mlruns", "https://ml.example", str(tmp_path / "no-python"))
    assert "pip install '.[tracking]'" in str(e.value) and "no-python is not a file" in str(e.value)
    # with the `tracking` extra installed here: copied in this process, no stage interpreter needed
    from jobs.adapters import mlflow_store

    calls = []
    monkeypatch.setattr(sync.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(mlflow_store, "copy_store", lambda src, dst: calls.append((src, dst)) or {"copied": 3})
    assert sync.copy_mlflow(tmp_path / "mlruns", "https://ml.example", "/none") == {"copied": 3}
    assert calls == [(f"file:{tmp_path}/mlruns", "https://ml.example")]
