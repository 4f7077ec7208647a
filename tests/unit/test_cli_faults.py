"""Small CLI faults (issue 18, item 4), each fixed against a test that failed before: an unknown
schedule is "no such" (66), `--help` into a closed pipe exits like every verb there (141, quietly), a
stale $LAUNCHER_CONFIG_DIRS entry stops only the verbs that compose a config, `hydra.mode=MULTIRUN` is
`-m` as in Hydra, and `schedule` finds the default run root with the one shared function."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.run import rundir, schedule
from launcher.cli import main

ROOT = Path(__file__).resolve().parents[2]


def launcher(*args: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "launcher", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, **kw)


def test_removing_an_unknown_schedule_exits_66(tmp_path, monkeypatch, capsys):
    # scrontab as Slurm's prints an empty crontab: "no crontab for <user>" on stdout, exit 1
    fake = tmp_path / "bin" / "scrontab"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho \"no crontab for $(id -un)\"\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    assert main(["schedule", "--remove", "no-such-schedule"]) == 66
    assert "no schedule 'no-such-schedule' in your scrontab" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["run", "--help"]])
def test_help_into_a_closed_pipe_exits_141_quietly(argv):
    # the reader has gone before the launcher writes: every write fails with EPIPE
    r, w = os.pipe()
    os.close(r)
    p = subprocess.run([sys.executable, "-m", "launcher", *argv], stdout=w, stderr=subprocess.PIPE, text=True,
                       cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    os.close(w)
    assert p.returncode == 141 and p.stderr == "", (p.returncode, p.stderr)


def test_a_stale_config_dir_stops_composing_verbs_only(tmp_path):
    env = {"LAUNCHER_CONFIG_DIRS": str(tmp_path / "gone"), "LAUNCHER_STATE_DIR": str(tmp_path / "state")}
    runs = tmp_path / "runs"
    p = launcher("run", "pipeline=smoke", "cluster=local", "wait=true", f"run_root={runs}",
                 env={**env, "LAUNCHER_CONFIG_DIRS": ""}, timeout=120)
    assert p.returncode == 0, p.stderr
    for argv in (["plan", "pipeline=smoke", "cluster=local"], ["configs"], ["env", "list"]):
        p = launcher(*argv, env=env)
        assert p.returncode == 64 and "does not exist or is not a directory" in p.stderr, (argv, p.stderr)
    root = ["--root", str(runs)]
    for argv in (["status", "latest", *root], ["logs", "latest", "shards", *root], ["runs", *root],
                 ["cancel", "latest", *root], ["summary", "latest", *root], ["--version"]):
        p = launcher(*argv, env=env)
        assert p.returncode == 0 and "config directory" not in p.stderr, (argv, p.returncode, p.stderr)


def test_hydra_mode_multirun_on_the_command_line_is_dash_m(tmp_path, capsys):
    assert main(["plan", "pipeline=smoke", "cluster=local", "hydra.mode=MULTIRUN", "pipeline.vars.scale=1,2",
                 f"run_root={tmp_path}"]) == 0
    run = json.loads((next((tmp_path / "plans").iterdir()) / "run.json").read_text())
    assert run["multirun"] is True and len(run["points"]) == 2
    assert not any("hydra.mode" in o for point in run["points"] for o in point)
    capsys.readouterr()
    # RUN is Hydra's default: a sweep still needs -m, and -m wins over it (as Hydra, which warns)
    assert main(["plan", "pipeline=smoke", "cluster=local", "hydra.mode=RUN", "pipeline.vars.scale=1,2",
                 f"run_root={tmp_path}"]) == 64
    assert main(["plan", "-m", "pipeline=smoke", "cluster=local", "hydra.mode=RUN", "pipeline.vars.scale=1,2",
                 f"run_root={tmp_path}"]) == 0
    assert main(["plan", "pipeline=smoke", "cluster=local", "hydra.mode=SWEEP", f"run_root={tmp_path}"]) == 64
    assert "hydra.mode: RUN or MULTIRUN, got 'SWEEP'" in capsys.readouterr().err


def test_schedule_uses_the_shared_default_run_root():
    assert not hasattr(schedule, "_default_root")
    assert schedule.default_root is rundir.default_root
