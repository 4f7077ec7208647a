"""`launcher plan --cfg job|all [--resolve] [--package KEY]` prints the composed config as Hydra's --cfg
does and writes nothing; `launcher configs [GROUP]` lists the config groups and their options."""
import pytest
from omegaconf import OmegaConf

from launcher.config import configdirs
from launcher.cli import main
from launcher.config.compose import compose

SMOKE = ["pipeline=smoke", "cluster=local"]


@pytest.fixture(autouse=True)
def _no_config_dirs(monkeypatch):
    monkeypatch.delenv(configdirs.ENV, raising=False)
    yield
    configdirs.use(None)


def cfg(capsys, tmp_path, *argv):
    assert main(["plan", *argv, f"run_root={tmp_path}"]) == 0
    assert not list(tmp_path.iterdir())  # nothing written
    return capsys.readouterr().out


def test_cfg_job_is_the_config_plan_uses_without_hydra(tmp_path, capsys):
    raw = cfg(capsys, tmp_path, *SMOKE, "--cfg", "job")
    assert "hydra:" not in raw and "seed: ${seed}" in raw  # interpolations as written
    resolved = cfg(capsys, tmp_path, *SMOKE, "--cfg", "job", "--resolve")
    assert "${" not in resolved
    got = OmegaConf.to_container(OmegaConf.create(resolved))
    want = compose([*SMOKE, f"run_root={tmp_path}"])
    assert got == want


def test_cfg_all_has_the_hydra_node_and_keeps_what_needs_a_running_job(tmp_path, capsys):
    out = cfg(capsys, tmp_path, *SMOKE, "--cfg", "all", "--resolve")
    assert out.startswith("hydra:\n") and "\npipeline:\n" in out
    assert "subdir: ${hydra.job.num}" in out and "${seed}" not in out


def test_cfg_package_prints_a_subtree_or_a_value(tmp_path, capsys):
    out = cfg(capsys, tmp_path, *SMOKE, "--cfg", "job", "--package", "pipeline.stages.reduce.after")
    assert out == "# @package pipeline.stages.reduce.after\nshards: afterok\n"
    assert cfg(capsys, tmp_path, *SMOKE, "--cfg", "job", "--package", "pipeline.stages.reduce.tasks") == "1\n"
    assert main(["plan", *SMOKE, "--cfg", "job", "--package", "pipeline.stagse"]) == 1
    assert "no key 'pipeline.stagse' in the composed config; did you mean 'pipeline.stages'?" in capsys.readouterr().err


def test_cfg_with_a_sweep_prints_one_document_per_point(tmp_path, capsys):
    out = cfg(capsys, tmp_path, *SMOKE, "-m", "seed=1,2", "--cfg", "job", "--package", "seed")
    assert out == "# point 0: pipeline=smoke cluster=local seed=1 run_root=%s\n1\n---\n" \
                  "# point 1: pipeline=smoke cluster=local seed=2 run_root=%s\n2\n" % (tmp_path, tmp_path)


def test_resolve_and_package_need_cfg(tmp_path, capsys):
    assert main(["plan", *SMOKE, "--resolve", f"run_root={tmp_path}"]) == 64
    assert "--resolve and --package go with --cfg" in capsys.readouterr().err


def test_configs_lists_groups_and_options_without_internal_entries(capsys):
    assert main(["configs"]) == 0
    lines = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines())
    assert set(lines) == {"cluster", "data", "model", "pipeline"}  # no hydra, no envs (requirements, not configs)
    assert "smoke" in lines["pipeline"].split() and "schema" not in lines["pipeline"].split()
    assert "dev" in lines["cluster"].split() and "fineweb_like" in lines["data"].split()


def test_configs_of_a_group_names_the_files_and_what_yours_shadow(tmp_path, capsys):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "tiny.yaml").write_text("defaults: [schema, _self_]\nname: mine\n")
    (tmp_path / "cluster_profiles").mkdir()
    (tmp_path / "cluster_profiles" / "mine.yaml").write_text("name: mine\nbackend: local\n")
    assert main(["configs", "model", "--config-dir", str(tmp_path)]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert rows["tiny"].split()[1] == str(tmp_path / "model" / "tiny.yaml") and "(shadows " in rows["tiny"]
    assert rows["1b"].endswith("conf/model/1b.yaml")
    assert main(["configs", "cluster", "--config-dir", str(tmp_path)]) == 0
    rows = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines())
    assert rows["mine"] == str(tmp_path / "cluster_profiles" / "mine.yaml") and "(shadows" not in rows["dev"]
    assert main(["configs", "pipelin"]) == 64
    assert "no config group 'pipelin'; did you mean 'pipeline'?" in capsys.readouterr().err
