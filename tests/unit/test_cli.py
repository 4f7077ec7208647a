import json

import pytest

from launcher.cli import main


def test_multirun_flag_may_follow_overrides(tmp_path, capsys):
    assert main(["plan", "pipeline=smoke", "cluster=local", "-m", "pipeline.vars.scale=1,2", f"run_root={tmp_path}"]) == 0
    run = next((tmp_path / "plans").iterdir())
    assert "pipeline.vars.scale=2" in json.loads((run / "run.json").read_text())["points"][1]
    assert "2x4" in capsys.readouterr().out


def test_plan_reports_config_errors_with_exit_1(tmp_path, capsys):
    assert main(["plan", "pipeline=smoke", "pipeline.stages.shards.tasks=0", f"run_root={tmp_path}"]) == 1
    assert "stage 'shards': pipeline.stages.shards.tasks" in capsys.readouterr().err


def test_help_lists_every_verb(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for verb in ("run", "plan", "status", "resume", "cancel", "logs", "runs"):
        assert verb in out


def test_unknown_run_is_a_clear_error(tmp_path, capsys):
    assert main(["status", "nope", "--root", str(tmp_path)]) == 1
    assert "no run 'nope'" in capsys.readouterr().err


def test_runs_shows_scheduled_firings_that_failed(tmp_path, capsys):
    for name, code in (("nightly", 1), ("hourly", 0)):
        sdir = tmp_path / "schedules" / name
        sdir.mkdir(parents=True)
        history = [{"status": "done", "start": "2026-11-23T02:00:00", "exit_code": code},
                   {"status": "skipped", "start": "2026-11-23T02:05:00", "exit_code": 0}]
        (sdir / "history.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
    assert main(["runs", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "schedule nightly: last firing at 2026-11-23T02:00:00 exited 1" in out
    assert "hourly" not in out
