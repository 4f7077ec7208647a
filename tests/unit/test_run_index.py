"""The run root, found the same way by every verb: `run` honours $LAUNCHER_RUN_ROOT, and a run started
with run_root=/elsewhere is found by its id from anywhere (launcher/run/runindex.py)."""
import os

from launcher.run import ops, runindex
from launcher.cli import main
from launcher.run.rundir import resolve_run


def test_run_honours_LAUNCHER_RUN_ROOT(tmp_path, monkeypatch):
    monkeypatch.setenv("LAUNCHER_RUN_ROOT", str(tmp_path / "env-root"))
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    assert main(["plan", "pipeline=smoke", "cluster=local"]) == 0  # `run` composes run_root the same way
    assert list((tmp_path / "env-root" / "plans").iterdir()) and not (tmp_path / "cwd" / "runs").exists()


def test_every_id_run_prints_works_from_another_shell_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LAUNCHER_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setattr(ops, "submit_all", lambda *a, **k: None)  # everything `run` does but sbatch
    assert main(["run", "pipeline=smoke", "cluster=local", f"run_root={tmp_path / 'elsewhere'}"]) == 0
    run_id = capsys.readouterr().out.split("run ", 1)[1].split(":", 1)[0]
    assert (tmp_path / "elsewhere" / run_id / "run.json").exists()

    monkeypatch.setenv("LAUNCHER_RUN_ROOT", str(tmp_path / "other-root"))
    monkeypatch.chdir(tmp_path)
    assert main(["status", run_id, "--json"]) == 1  # found: nothing was submitted, so it failed
    assert f'"run": "{run_id}"' in capsys.readouterr().out
    assert main(["summary", run_id]) == 0 and main(["endpoints", run_id]) == 0
    assert main(["logs", run_id, "shards"]) == 1  # found; the task was never submitted
    assert "never submitted" in capsys.readouterr().err
    assert main(["status", "latest"]) == 66  # latest: the newest run under the run root in use


def test_the_index_is_links_made_atomically_and_a_gone_run_is_not_found(tmp_path, monkeypatch):
    monkeypatch.setenv("LAUNCHER_STATE_DIR", str(tmp_path / "state"))
    a, b = tmp_path / "a" / "r1", tmp_path / "b" / "r1"
    for d in (a, b):
        d.mkdir(parents=True)
        (d / "run.json").write_text("{}")
    runindex.record(a)
    assert runindex.lookup("r1") == a and resolve_run("r1", tmp_path / "none").path == a
    runindex.record(b)  # the same id again (a copied run directory): the newest wins
    assert runindex.lookup("r1") == b
    assert os.listdir(tmp_path / "state" / "runs") == ["r1"]  # no temporary link left behind
    (b / "run.json").unlink()
    assert runindex.lookup("r1") is None
    assert runindex.lookup("../a/r1") is None and runindex.lookup(".") is None and runindex.lookup("") is None


def test_an_unwritable_state_dir_costs_the_index_not_the_run(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("LAUNCHER_STATE_DIR", str(tmp_path / "file" / "state"))  # under a file: mkdir fails
    runindex.record(tmp_path)
    assert runindex.lookup(tmp_path.name) is None


def test_the_state_dir_follows_xdg(tmp_path, monkeypatch):
    monkeypatch.delenv("LAUNCHER_STATE_DIR")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert runindex.state_dir() == tmp_path / "launcher"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert runindex.state_dir() == tmp_path / "home" / ".local" / "state" / "launcher"
