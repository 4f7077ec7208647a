"""Your own configs from outside the repository (launcher/config/configdirs.py): --config-dir and
$LAUNCHER_CONFIG_DIRS are searched for pipelines, data recipes, models, cluster profiles and environment
requirements, before the package's own."""
import json
import os

import pytest

from launcher.config import configdirs
from launcher.cli import main
from launcher.config.compose import compose

PIPE = """defaults:
  - schema
  - _self_
name: mypipe
stages:
  hello: {kind: command, command: echo hello}
"""
PROFILE = """name: mine
backend: local
description: my own
max_parallel: 1
environments:
  myenv: {build: myenv}
stage_environments: {command: myenv}
"""


@pytest.fixture(autouse=True)
def _back_to_the_environment(monkeypatch):
    monkeypatch.delenv(configdirs.ENV, raising=False)
    yield
    configdirs.use(None)  # the next composition (other tests) searches the package's configs only


def conf_dir(root, model_name="tiny-mine"):
    for sub in ("pipeline", "cluster_profiles", "model", "envs"):
        (root / sub).mkdir(parents=True)
    (root / "pipeline" / "mypipe.yaml").write_text(PIPE)
    (root / "cluster_profiles" / "mine.yaml").write_text(PROFILE)
    (root / "model" / "tiny.yaml").write_text(f"defaults: [schema, _self_]\nname: {model_name}\n")
    (root / "envs" / "myenv.txt").write_text("filelock\n")
    return root


def test_plan_finds_your_pipeline_and_profile_and_records_the_dirs(tmp_path, capsys):
    mine = conf_dir(tmp_path / "mine")
    assert main(["plan", "--config-dir", str(mine), "pipeline=mypipe", "cluster=mine", f"run_root={tmp_path}"]) == 1  # 1: myenv is not built (preflight)
    plan_dir = next((tmp_path / "plans").iterdir())
    meta = json.loads((plan_dir / "run.json").read_text())
    assert (meta["pipeline"], meta["cluster"], meta["config_dirs"]) == ("mypipe", "mine", [str(mine)])
    assert "myenv.txt in conf/envs/ or a config directory's envs/" in capsys.readouterr().err


def test_the_environment_variable_is_seen_by_env_list(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(configdirs.ENV, os.pathsep.join([str(conf_dir(tmp_path / "a")), ""]))
    assert main(["env", "list", "--cluster", "mine"]) == 0
    out = capsys.readouterr().out
    assert "environments of cluster 'mine'" in out and "myenv" in out


def test_your_options_shadow_the_packages_and_the_first_dir_wins(tmp_path):
    first, second = conf_dir(tmp_path / "first", "first"), conf_dir(tmp_path / "second", "second")
    configdirs.use(configdirs.checked([first, second], "test"))
    assert compose(["model=tiny"])["model"]["name"] == "first"
    (first / "cluster_profiles" / "dev.yaml").write_text(PROFILE.replace("name: mine", "name: my-dev"))
    configdirs.use(configdirs.checked([second, first], "test"))  # composed again, with the new search path
    assert compose(["model=tiny", "cluster=dev"])["model"]["name"] == "second"
    assert compose(["cluster=dev"])["cluster"]["name"] == "my-dev"
    configdirs.use(None)
    assert compose(["model=tiny", "cluster=dev"])["model"]["name"] == "tiny"
    assert compose(["cluster=dev"])["cluster"]["name"] == "dev"


def test_env_build_reads_your_requirements(tmp_path):
    from launcher.config import environments

    mine = conf_dir(tmp_path / "mine")
    configdirs.use(configdirs.checked([mine], "test"))
    assert environments.spec_files("myenv") == [mine / "envs" / "myenv.txt"]
    assert environments.spec_files("smoke")[0] == environments.SPECS_DIR / "smoke.txt"


@pytest.mark.parametrize("make, needle", [
    (lambda d: None, "does not exist"),
    (lambda d: (d.mkdir(), (d / "config.yaml").write_text("{}")), "would replace the launcher's root config"),
    (lambda d: (d.mkdir(), (d / "cluster").mkdir()), "cluster profiles go in"),
])
def test_a_directory_that_is_not_a_config_dir_is_a_usage_error(tmp_path, make, needle, capsys, monkeypatch):
    bad = tmp_path / "bad"
    make(bad)
    assert main(["plan", "--config-dir", str(bad), "pipeline=smoke", f"run_root={tmp_path}"]) == 64
    assert needle in capsys.readouterr().err
    monkeypatch.setenv(configdirs.ENV, str(bad))
    assert main(["env", "list"]) == 64
    assert f"${configdirs.ENV}" in capsys.readouterr().err
