"""The site default (launcher/config/sitedefault.py): the cluster profile used when `cluster=` is not given
comes from $LAUNCHER_CLUSTER or the user config file; where Slurm answers and the choice falls to
`local` by default, `run` refuses and `plan` warns."""
import json
import os

import pytest

from launcher.config import sitedefault
from launcher.cli import main


@pytest.fixture
def slurm_host(tmp_path, monkeypatch):
    """A host where `sinfo` answers (a stand-in on PATH) and the probe is not skipped."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sinfo").write_text("#!/bin/sh\necho debug\n")
    (bin_dir / "sinfo").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv(sitedefault.PROBE_ENV, "1")
    return bin_dir


def planned(tmp_path) -> dict:
    return json.loads(next((tmp_path / "plans").iterdir()).joinpath("run.json").read_text())


def test_launcher_cluster_chooses_the_profile_and_is_recorded(tmp_path, monkeypatch, slurm_host):
    monkeypatch.setenv(sitedefault.ENV, "dev")
    (slurm_host / "sinfo").write_text("#!/bin/sh\nexit 7\n")  # never asked: the choice is not local by default
    # A stand-in controller for preflight (this test must not depend on whether the dev cluster is up):
    # one idle node in partition debug; accounting off, so no sacctmgr is asked.
    (slurm_host / "scontrol").write_text(
        "#!/bin/sh\ncase \"$*\" in\n"
        "  'show config') printf 'MaxArraySize = 1001\\nAccountingStorageType = accounting_storage/none\\n' ;;\n"
        "  '-o show partition') echo 'PartitionName=debug Default=YES MaxTime=UNLIMITED Nodes=n1 State=UP' ;;\n"
        "  '-o show node') echo 'NodeName=n1 CPUTot=8 RealMemory=16000 Partitions=debug State=IDLE' ;;\n"
        "  *) exit 1 ;;\nesac\n")
    (slurm_host / "scontrol").chmod(0o755)
    main(["plan", "pipeline=smoke", f"run_root={tmp_path}"])
    meta = planned(tmp_path)
    assert meta["cluster"] == "dev" and meta["overrides"][0] == "cluster=dev"  # resume composes the same


def test_cluster_given_wins_over_the_site_default(tmp_path, monkeypatch):
    monkeypatch.setenv(sitedefault.ENV, "dev")
    assert main(["plan", "pipeline=smoke", "cluster=local", f"run_root={tmp_path}"]) == 0
    assert planned(tmp_path)["cluster"] == "local"


def test_the_user_config_file_names_the_default(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(sitedefault.FILE_ENV, str(tmp_path / "config.yaml"))
    (tmp_path / "config.yaml").write_text("cluster: local-gpu\n")
    assert sitedefault.default_cluster() == ("local-gpu", str(tmp_path / "config.yaml"))
    monkeypatch.setenv(sitedefault.ENV, "dev")
    assert sitedefault.default_cluster() == ("dev", "$LAUNCHER_CLUSTER")  # the variable wins over the file
    (tmp_path / "config.yaml").write_text("clusetr: dev\n")
    monkeypatch.delenv(sitedefault.ENV)
    assert main(["plan", "pipeline=smoke", f"run_root={tmp_path / 'r'}"]) == 64
    assert "unknown key(s) clusetr (it may set: cluster)" in capsys.readouterr().err


def test_a_default_naming_no_profile_is_a_usage_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(sitedefault.ENV, "dve")
    assert main(["run", "pipeline=smoke", f"run_root={tmp_path}"]) == 64
    assert "$LAUNCHER_CLUSTER names cluster profile 'dve', which does not exist; did you mean 'dev'?" \
        in capsys.readouterr().err
    assert not tmp_path.joinpath("plans").exists() and not list(tmp_path.iterdir())


def test_run_refuses_local_by_default_where_slurm_answers(tmp_path, slurm_host, capsys):
    root = tmp_path / "runs"
    assert main(["run", "pipeline=smoke", f"run_root={root}"]) == 64
    err = capsys.readouterr().err
    assert "this host answers Slurm (sinfo)" in err and "say cluster=local" in err and not root.exists()
    assert main(["plan", "pipeline=smoke", f"run_root={root}"]) == 0  # plan only warns
    assert "warning: this host answers Slurm" in capsys.readouterr().err


def test_cluster_local_said_is_not_questioned(tmp_path, slurm_host, capsys):
    (slurm_host / "sinfo").write_text("#!/bin/sh\necho asked >&2\nexit 0\n")
    assert main(["plan", "pipeline=smoke", "cluster=local", f"run_root={tmp_path}"]) == 0
    err = capsys.readouterr().err
    assert "asked" not in err and "warning" not in err


def test_the_probe_is_cheap_and_skippable(slurm_host, monkeypatch):
    assert sitedefault.slurm_answers()
    (slurm_host / "sinfo").write_text("#!/bin/sh\nexit 1\n")  # no controller
    assert not sitedefault.slurm_answers()
    (slurm_host / "sinfo").write_text("#!/bin/sh\nsleep 5\n")  # a controller that does not answer
    assert not sitedefault.slurm_answers(timeout=0.2)
    (slurm_host / "sinfo").write_text("#!/bin/sh\nexit 0\n")
    monkeypatch.setenv(sitedefault.PROBE_ENV, "0")
    assert not sitedefault.slurm_answers()


@pytest.mark.parametrize("overrides, named", [
    (["pipeline=smoke"], False), (["cluster=dev"], True), (["+cluster=dev"], True), (["cluster=local,dev"], True),
    (["cluster.partition=x"], False), (["pipeline.vars.cluster=1"], False),
])
def test_what_names_the_cluster(overrides, named):
    assert sitedefault.names_cluster(overrides) is named


def test_env_list_uses_the_site_default(monkeypatch, capsys):
    monkeypatch.setenv(sitedefault.ENV, "local-gpu")
    assert main(["env", "list"]) == 0
    assert "environments of cluster 'local-gpu'" in capsys.readouterr().out


def test_a_schedule_keeps_the_site_settings_of_the_shell_that_installed_it(tmp_path, monkeypatch):
    """A firing runs in Slurm's environment: the default cluster and $LAUNCHER_CONFIG_DIRS go on its line."""
    from launcher.run.schedule import with_site_settings

    monkeypatch.setenv(sitedefault.ENV, "dev")
    monkeypatch.setenv("LAUNCHER_CONFIG_DIRS", str(tmp_path))
    assert with_site_settings(["run", "pipeline=smoke"]) == \
        ["run", "--config-dir", str(tmp_path), "cluster=dev", "pipeline=smoke"]
    assert with_site_settings(["run", "cluster=local"]) == ["run", "--config-dir", str(tmp_path), "cluster=local"]
    assert with_site_settings(["status", "latest"]) == ["status", "latest"]
