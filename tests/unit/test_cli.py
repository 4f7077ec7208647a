import json
import subprocess
import sys

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
    assert main(["status", "nope", "--root", str(tmp_path)]) == 66  # EX_NOINPUT: not 1 (failed)
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
    assert main(["runs", "--root", str(tmp_path), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out) == [] and "schedule nightly: last firing" in captured.err  # stdout: JSON only


def test_no_such_run_stage_or_task_exits_66_for_every_verb(tmp_path, capsys):
    for verb in ("status", "resume", "cancel", "summary", "endpoints"):
        assert main([verb, "nope", "--root", str(tmp_path)]) == 66, verb
        assert main([verb, "latest", "--root", str(tmp_path)]) == 66, verb  # an empty run root
    assert main(["logs", "nope", "shards", "--root", str(tmp_path)]) == 66
    assert main(["plan", "pipeline=smoke", "cluster=local", f"run_root={tmp_path}"]) == 0
    plan_dir = next((tmp_path / "plans").iterdir())  # run.json and plan.json, like a run
    capsys.readouterr()
    assert main(["logs", str(plan_dir), "nope"]) == 66
    assert "has no stage 'nope'" in capsys.readouterr().err
    assert main(["logs", str(plan_dir), "shards", "--task", "99"]) == 66


@pytest.mark.parametrize("argv, needle", [
    (["stauts", "latest"], "did you mean 'status'?"),
    (["rnus"], "did you mean 'runs'?"),
    (["env", "lsit"], "did you mean 'list'?"),
    (["status"], "required: run"),
    (["status", "latest", "--jsno"], "unrecognized arguments: --jsno"),
    (["logs", "latest", "shards", "--task", "x"], "invalid int value"),
    (["schedule", "--bogus"], "unrecognized arguments"),
    ([], "required: VERB"),
])
def test_usage_errors_exit_64_not_2(argv, needle, capsys):
    """2 is `status`'s "still running": a polling loop with a typo must not spin forever."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 64
    assert needle in capsys.readouterr().err


def test_an_override_that_does_not_parse_is_a_usage_error(tmp_path, capsys):
    assert main(["plan", "pipeline=smoke", "cluster=local", "pipeline.vars.scale=[1,", f"run_root={tmp_path}"]) == 64
    assert "invalid override" in capsys.readouterr().err
    assert main(["plan", "pipeline=smoke", "cluster=local", "pipeline.vars.scale=1,2", f"run_root={tmp_path}"]) == 64
    assert "need -m/--multirun" in capsys.readouterr().err


def test_help_documents_the_exit_codes(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for line in ("0    ok", "1    the run failed", "2    the run is still", "64   usage error", "66   no such run"):
        assert line in out


def test_version_is_the_package_version(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"launcher {version('slurm-llm-launcher')}"


def closed_stdout(*argv, cwd):
    """`launcher ARGV | head -0`: the reader is gone before the launcher writes a byte."""
    p = subprocess.Popen([sys.executable, "-m", "launcher", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         cwd=cwd, text=True)
    p.stdout.close()
    err = p.stderr.read()
    return p.wait(timeout=60), err


def test_a_closed_pipe_exits_141_quietly(tmp_path):
    assert main(["plan", "pipeline=smoke", "cluster=local", f"run_root={tmp_path}"]) == 0
    plan_dir = next((tmp_path / "plans").iterdir())
    for argv in (["runs", "--root", str(tmp_path)],          # a rich table
                 ["status", str(plan_dir), "--json"],       # print()
                 ["status", str(plan_dir)]):
        rc, err = closed_stdout(*argv, cwd=tmp_path)
        assert (rc, err) == (141, ""), (argv, rc, err)


def test_runs_json_lists_runs_with_their_state_from_the_run_directory(tmp_path, capsys, monkeypatch):
    from jobs import layout
    from launcher.config.compose import compose
    from launcher.plan.model import build_plan
    from launcher.run.rundir import Run
    from launcher.slurm.client import Slurm

    plan = build_plan([compose(["pipeline=smoke", "cluster=dev"])], [[]])
    for created, run_id in enumerate(("done", "broken", "queued")):
        d = tmp_path / run_id
        layout.atomic_write_json(d / "plan.json", plan.to_json())
        layout.atomic_write_json(d / "run.json", {"id": run_id, "created": created, "pipeline": "smoke",
                                                  "cluster": "dev", "points": [[]]})
        Run(d).append_ledger({"job_id": "7", "stage": "shards", "chunk": 0, "offset": 0, "tasks": [0, 1, 2, 3]})
    for name, s in plan.stages.items():
        for t in range(s.total_tasks):
            layout.atomic_write_json(layout.marker_path(tmp_path / "done", name, s.hash, t), {})
    layout.atomic_write_json(layout.marker_path(tmp_path / "broken", "shards", plan.stages["shards"].hash, 3,
                                                "failed"), {"job_id": "7_3"})
    monkeypatch.setattr(Slurm, "query", lambda *a, **k: pytest.fail("runs asked the scheduler"))

    assert main(["runs", "--root", str(tmp_path), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["run"], r["state"]) for r in rows] == [("queued", "UNFINISHED"), ("broken", "FAILED"),
                                                      ("done", "COMPLETED")]
    assert rows[0]["path"] == str(tmp_path / "queued") and rows[0]["jobs"] == 1 and rows[0]["pipeline"] == "smoke"
    assert main(["runs", "--root", str(tmp_path)]) == 0
    assert "UNFINISHED" in capsys.readouterr().out


def test_the_command_exits_without_teardown_and_loses_no_output(tmp_path):
    """`python -m launcher` (cli.entry) ends with os._exit after flushing: the exit code, stdout and
    stderr are those of main(), also into a pipe read only in part; LAUNCHER_FAST_EXIT=0 exits as usual."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "LAUNCHER_RUN_ROOT": str(tmp_path)}
    for fast in ("1", "0"):
        p = subprocess.run([sys.executable, "-m", "launcher", "status", "nope"], capture_output=True, text=True,
                           env={**env, "LAUNCHER_FAST_EXIT": fast})
        assert p.returncode == 66 and "no run 'nope'" in p.stderr, (fast, p.returncode, p.stderr)
        p = subprocess.run([sys.executable, "-m", "launcher", "plan", "pipeline=smoke", "cluster=local",
                            f"run_root={tmp_path}"], capture_output=True, text=True, env={**env, "LAUNCHER_FAST_EXIT": fast})
        assert p.returncode == 0 and p.stdout.rstrip().endswith("checkpointing/scripts/s0-0.sbatch  <- afterok:reduce"), \
            p.stdout[-500:]
    p = subprocess.run(f"{sys.executable} -m launcher --help | head -1", shell=True, capture_output=True, text=True,
                       env=env)
    assert p.returncode == 0 and p.stdout.startswith("usage:") and not p.stderr, p.stderr
