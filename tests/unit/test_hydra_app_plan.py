"""kind=hydra_app (launcher/kinds/hydra_app.py, jobs/kinds/hydra_app.py) and the Hydra launcher plugin's
pure parts (hydra_plugins/launcher_slurm): the plan-time checks, the paths the plan records and the
task's command line, hydra.launcher.* -> the stage's keys with hydra-submitit-launcher's aliases, and
the bad-config corpus' hydra_app_* cases composed and planned in-process (cluster=local). End to end:
tests/integration/test_hydra_app.py."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from launcher.config.compose import compose, sweep_points
from launcher.errors import ConfigErrors
from launcher.plan.model import build_plan

ROOT = Path(__file__).resolve().parents[2]
APP_DIR = ROOT / "tests" / "integration" / "hydra_app"
CORPUS = ROOT / "tests" / "bad_configs"
S = "pipeline.stages.train"


def plan_of(*overrides, multirun=False):
    points = sweep_points(["pipeline=hydra_app", "cluster=local", f"pipeline.vars.app_dir={APP_DIR}", *overrides],
                          multirun)
    return build_plan([compose(p) for p in points], points)


def errors_of(*overrides):
    with pytest.raises(ConfigErrors) as e:
        plan_of(*overrides)
    return {(x.stage, x.key): x.message for x in e.value.errors}


# -- the plan ------------------------------------------------------------------------------------------
def test_the_plan_records_absolute_paths_and_where_the_app_lies_in_the_snapshot(tmp_path, monkeypatch):
    from launcher import kinds

    monkeypatch.chdir(ROOT)  # relative paths are read against the directory the launcher runs in
    plan = plan_of("pipeline.vars.app_dir=tests/integration/hydra_app", f"{S}.hydra_app.workdir=tests",
                   "pipeline.vars.lr=0.1,0.01", multirun=True)
    stage = plan.stages["train"]
    assert stage.kind == "hydra_app" and stage.points == 2 and [d.parent for d in stage.deps] == ["make"]
    h = stage.payloads[1]["hydra_app"]
    assert h["app"] == str(APP_DIR / "train.py") and h["workdir"] == str(ROOT / "tests")
    assert h["overrides"] == ["lr=0.01", "model=a", "data_from=${oc.env:LAUNCHER_INPUT_MAKE}/0/data.txt"]
    assert plan.code == [str(APP_DIR)]
    extra = kinds.get("hydra_app").spec_extra(plan, stage)
    assert extra == {"hydra_app": {"app": "hydra_app/train.py", "config_path": None, "config_dir": None}}
    assert kinds.get("hydra_app").targets(stage) == [(f"{S}.hydra_app.app", "hydra:main")]


def test_a_config_folder_is_mapped_into_the_snapshot_too():
    from launcher import kinds

    plan = plan_of(f"{S}.hydra_app.config_path={APP_DIR / 'conf'}", f"{S}.hydra_app.config_name=config")
    extra = kinds.get("hydra_app").spec_extra(plan, plan.stages["train"])
    assert extra["hydra_app"]["config_path"] == "hydra_app/conf"


def test_plan_time_checks_name_stage_and_key(tmp_path):
    (tmp_path / "app.txt").write_text("x")
    errs = errors_of(f"{S}.hydra_app.app={tmp_path / 'app.txt'}", f"{S}.tasks=3",
                     f"{S}.hydra_app.overrides=['-m','lr=1,2','hydra.run.dir=/x','hydra.job.id=7','a=[1,2',"
                     f"'hydra.mode=MULTIRUN']")
    assert "must be the app's .py file" in errs[("train", f"{S}.hydra_app.app")]
    assert "must be 1" in errs[("train", f"{S}.tasks")]
    msgs = [errs.get(("train", f"{S}.hydra_app.overrides.{i}"), "") for i in range(6)]
    assert "command-line flag" in msgs[0] and "is a sweep" in msgs[1] and "hydra_app.run_dir" in msgs[2]
    assert "job id" in msgs[3] and "cannot parse" in msgs[4] and "RUN mode" in msgs[5]


def test_the_app_must_exist_and_lie_in_pipeline_code(tmp_path):
    errs = errors_of(f"{S}.hydra_app.app={tmp_path / 'train.py'}")
    assert errs == {("train", f"{S}.hydra_app.app"): f"{tmp_path / 'train.py'} does not exist"}
    (tmp_path / "train.py").write_text("")
    errs = errors_of(f"{S}.hydra_app.app={tmp_path / 'train.py'}", f"{S}.hydra_app.config_dir={tmp_path}")
    assert "is not in pipeline.code" in errs[("train", f"{S}.hydra_app.app")]
    assert "is not in pipeline.code" in errs[("train", f"{S}.hydra_app.config_dir")]
    # the app file itself in pipeline.code is enough (its configs then need an entry of their own)
    plan_of(f"{S}.hydra_app.app={tmp_path / 'train.py'}", f"pipeline.code=[{tmp_path / 'train.py'}]")


def test_a_command_stage_given_a_hydra_app_option_is_refused():
    errs = errors_of("pipeline.stages.make.hydra_app.app=x.py")
    assert "only kind=hydra_app reads it" in errs[("make", "pipeline.stages.make.hydra_app.app")]


def test_hydra_app_is_one_app_per_stage_but_overrides_may_differ_per_point(tmp_path):
    (tmp_path / "other.py").write_text("")
    points = sweep_points(["pipeline=hydra_app", "cluster=local", f"pipeline.vars.app_dir={APP_DIR}",
                           f"pipeline.code=[{APP_DIR},{tmp_path}]",
                           f"{S}.hydra_app.app={APP_DIR / 'train.py'},{tmp_path / 'other.py'}"], True)
    with pytest.raises(ConfigErrors) as e:
        build_plan([compose(p) for p in points], points)
    assert [x.key for x in e.value.errors] == [f"{S}.hydra_app.app"]


@pytest.mark.parametrize("case", sorted(CORPUS.glob("hydra_app_*.yaml")), ids=lambda p: p.stem)
def test_bad_config_cases_fail_at_plan_time(case):
    """The corpus' hydra_app_* cases, composed and planned here (on cluster=local): each fails with its
    stage, key and message before anything would be submitted."""
    spec = yaml.safe_load(case.read_text())
    overrides = [o.replace("{files}", str(CORPUS / "files")) for o in spec["overrides"]]
    with pytest.raises(ConfigErrors) as e:
        build_plan([compose([f"pipeline={spec.get('pipeline', 'smoke')}", "cluster=local", *overrides])], [[]])
    exp = spec["expect"]
    found = {(x.stage, x.key): x.message for x in e.value.errors}
    assert (exp["stage"], exp["key"]) in found, found
    assert exp["message"] in found[(exp["stage"], exp["key"])]


# -- the task's command line ---------------------------------------------------------------------------
def task_of(tmp_path, **hydra_app):
    payload = {"hydra_app": {"config_name": None, "overrides": ["lr=0.1"], "run_dir": None, "workdir": None,
                             **hydra_app}}
    spec = {"code_dir": str(tmp_path / "code"), "run_dir": str(tmp_path), "stage": "train", "parents": ["prep"],
            "stage_hashes": {"prep": "abc", "train": "def"}, "stage_outputs": {"prep": "datatrove", "train": "task"},
            "hydra_app": {"app": "app/train.py", "config_path": "app/conf", "config_dir": None}}
    return SimpleNamespace(payload=payload, spec=spec, run_dir=tmp_path, stage="train", point=3, job_id="12_3")


def test_the_task_runs_the_snapshot_copy_with_hydras_folders_and_numbers(tmp_path):
    from jobs.kinds.hydra_app import command

    argv, run_dir = command(task_of(tmp_path, config_name="big"))
    code = tmp_path / "code"
    assert run_dir == tmp_path / "stages" / "train" / "out" / "3"
    assert argv == [sys.executable, str(code / "app/train.py"), f"--config-path={code / 'app/conf'}",
                    "--config-name=big", "hydra.job.id='12_3'", "hydra.job.num=3", "lr=0.1",
                    f"hydra.run.dir='{run_dir}'",
                    "+hydra.callbacks.launcher_return={_target_: jobs.runtime.hydra_return.SaveReturn, "
                    f"path: '{run_dir}/launcher-return.json'}}"]
    # the plugin's own job number and output folder win
    argv, run_dir = command(task_of(tmp_path, overrides=["hydra.job.num=7"], run_dir="/sweep/a,b=1"))
    assert "hydra.job.num=3" not in argv and argv[-3:-1] == ["hydra.job.num=7", "hydra.run.dir='/sweep/a,b=1'"]


def test_a_folder_placeholder_in_an_override_is_the_parents_folder_on_the_node(tmp_path):
    """A datatrove parent's data lies in its datatrove folder (not in $LAUNCHER_INPUT_<PARENT>)."""
    from jobs.kinds.hydra_app import command

    argv, _ = command(task_of(tmp_path, overrides=["data='{input:prep}/00000.jsonl'", "all={input}"]))
    prep = tmp_path / "stages" / "prep" / "datatrove" / "abc" / "3" / "output"
    assert argv[-4:-2] == [f"data='{prep}/00000.jsonl'", f"all={prep}"]


def test_a_folder_placeholder_names_a_stage_this_one_waits_for():
    errs = errors_of(f"{S}.hydra_app.overrides=['data=\\'{{input:nope}}/x\\'','b={{input:make}}/x']")
    assert "'nope' is not a stage this one waits for" in errs[("train", f"{S}.hydra_app.overrides.0")]
    assert "needs quotes" in errs[("train", f"{S}.hydra_app.overrides.1")]
    plan_of(f"{S}.hydra_app.overrides=['data=\\'{{input:make}}/0/data.txt\\'']")


def test_override_values_are_quoted_for_hydra():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from jobs.runtime.hydra_overrides import key, quote

    parser = OverridesParser.create()
    for value in ["/a/b", "/a b/c,d=e", "it's", "say \"hi\" it's", "[x]"]:
        assert parser.parse_override(f"hydra.run.dir={quote(value)}").value() == value
    assert key("++hydra/launcher@pkg=x") == "hydra/launcher" and key("~a.b") == "a.b"


# -- the plugin: hydra.launcher.* -> the stage ---------------------------------------------------------
def test_the_plugin_knows_every_stage_resource_by_its_own_name():
    from hydra_plugins.launcher_slurm._settings import ALIASES, RESOURCES
    from hydra_plugins.launcher_slurm.config import LauncherSlurmConf, RequeueConf
    from launcher.config.schema import Requeue, Resources

    assert RESOURCES == tuple(f.name for f in dataclasses.fields(Resources))
    fields = {f.name for f in dataclasses.fields(LauncherSlurmConf)}
    assert set(RESOURCES) | set(ALIASES) | {"throttle", "requeue", "env"} <= fields
    assert {f.name for f in dataclasses.fields(RequeueConf)} == {f.name for f in dataclasses.fields(Requeue)}


def test_submitit_names_are_aliases_of_the_stage_fields():
    from hydra_plugins.launcher_slurm._settings import launcher_key, stage_settings

    settings, origin, problems = stage_settings({
        "timeout_min": 90, "tasks_per_node": 2, "cpus_per_task": 4, "gpus_per_node": 1, "mem_gb": 16,
        "partition": "gpu", "account": "a", "qos": "q", "array_parallelism": 2, "max_num_timeout": 5,
        "signal_delay_s": 60, "additional_parameters": {"mail-user": "me@x"}, "requeue": {"signal": "USR1"},
        "env": {"A": "1"}, "cluster": "dev", "run_root": "runs", "nodes": None, "sbatch": {}})
    assert problems == []
    assert settings == {"resources": {"time": "90", "ntasks_per_node": 2, "cpus_per_task": 4, "gpus_per_node": 1,
                                      "mem_gb": 16, "partition": "gpu", "account": "a", "qos": "q",
                                      "sbatch": {"mail-user": "me@x"}},
                        "requeue": {"signal": "USR1", "max": 5, "signal_delay_s": 60}, "throttle": 2,
                        "env": {"A": "1"}}
    assert launcher_key("resources.time", origin) == "hydra.launcher.timeout_min"
    assert launcher_key("resources.sbatch.mail-user", origin) == "hydra.launcher.additional_parameters.mail-user"
    assert launcher_key("requeue.signal", origin) == "hydra.launcher.requeue.signal"
    assert launcher_key("resources.nodes", origin) is None


def test_a_field_set_by_both_names_or_a_bad_timeout_is_a_problem():
    from hydra_plugins.launcher_slurm._settings import stage_settings

    _, _, problems = stage_settings({"time": "01:00:00", "timeout_min": 60, "throttle": 1, "array_parallelism": 2})
    assert problems == [("hydra.launcher.timeout_min", "sets resources.time as hydra.launcher.time does: give one "
                                                       "of them"),
                        ("hydra.launcher.array_parallelism", "sets throttle as hydra.launcher.throttle does: give one "
                                                             "of them")]
    for bad in (0, 1.5, True, "60"):
        assert stage_settings({"timeout_min": bad})[2][0][0] == "hydra.launcher.timeout_min"


def test_the_multiruns_hydra_overrides_that_reach_the_tasks():
    from hydra_plugins.launcher_slurm._submit import passed, stage_name

    kept = ["hydra/launcher=launcher_slurm", "hydra.launcher.partition=gpu", "hydra.job.chdir=true",
            "hydra/job_logging=disabled", "+hydra.job.env_set.X=1", "hydra.searchpath=[file:///x]"]
    dropped = ["hydra.mode=MULTIRUN", "hydra/sweeper=basic", "hydra.sweeper.params.lr='1,2'", "hydra.sweep.dir=/x",
               "hydra.run.dir=/y", "hydra.job.num=3", "hydra.job.id=1"]
    assert [o for o in kept + dropped if passed(o)] == kept
    assert stage_name("train") == "train" and stage_name("my app!") == "my_app_" and stage_name("_x") == "app_x"


def test_the_snapshot_holds_the_apps_folder_widened_to_its_configs(tmp_path):
    from hydra_plugins.launcher_slurm._submit import code_paths

    src = str(tmp_path / "src")  # the app's folder: src/train.py
    assert code_paths(src, None, None, []) == [str(tmp_path / "src")]
    assert code_paths(src, str(tmp_path / "src" / "conf"), None, []) == [str(tmp_path / "src")]
    assert code_paths(src, str(tmp_path / "conf"), "/elsewhere/conf", [str(tmp_path / "src" / "lib"), "/lib"]) == \
        [str(tmp_path), "/elsewhere/conf", "/lib"]
    # a module app (python -m pkg.train): the package keeps its name, a config folder outside goes beside it
    pkg = str(tmp_path / "src" / "pkg")
    assert code_paths(pkg, str(tmp_path / "src" / "pkg" / "conf"), None, [], widen=False) == [pkg]
    assert code_paths(pkg, str(tmp_path / "conf"), None, [], widen=False) == [pkg, str(tmp_path / "conf")]


def test_a_module_app_is_found_as_the_snapshots_import_path_finds_it(tmp_path):
    from launcher.kinds.hydra_app import module_file

    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    for f in ("__init__.py", "train.py", "sub/__init__.py", "sub/__main__.py"):
        (pkg / f).write_text("")
    (tmp_path / "solo.py").write_text("")
    code = [str(pkg), str(tmp_path / "solo.py")]
    assert module_file("pkg.train", code) == str(pkg / "train.py")
    assert module_file("pkg.sub", code) == str(pkg / "sub" / "__main__.py")
    assert module_file("solo", code) == str(tmp_path / "solo.py")
    assert module_file("pkg.nope", code) is None and module_file("other.train", code) is None


@pytest.mark.parametrize("section,key,fragment", [
    ({"app": "a.py", "module": "pkg.train"}, "hydra_app.module", "not both"),
    ({"module": "pkg-x.train"}, "hydra_app.module", "dotted module name"),
    ({}, "hydra_app.app", "or hydra_app.module"),
])
def test_app_or_module_exactly_one_and_well_formed(section, key, fragment):
    from launcher.errors import ConfigError
    from launcher.kinds.base import Problems
    from launcher.kinds.hydra_app import KIND

    errors: list = []
    st = {"tasks": 1, "hydra_app": {"app": None, "module": None, "overrides": [], **section}}
    KIND.check_config(Problems("train", errors), st)
    assert any(isinstance(e, ConfigError) and e.key.endswith(key) and fragment in e.message for e in errors), errors
