"""cluster=local end to end: the real CLI, the real local scheduler, real task processes."""
import json
import shutil
import subprocess
import sys
import time

import pytest

from conftest import ROOT, CLI, stage_counts

from jobs import layout, point_configs


def read(run_dir, stage, point, task, name):
    return (layout.output_dir(run_dir, stage, point, task) / name).read_text().strip()


def test_smoke_completes_with_right_outputs(cli):
    p = cli("run", "pipeline=smoke", "cluster=local", "wait=true", "poll_s=0.3")
    assert "COMPLETED" in p.stdout
    run_dir = cli.run_dir()
    assert read(run_dir, "reduce", 0, 0, "total.txt") == "10"  # 1+2+3+4
    assert read(run_dir, "checkpointing", 0, 0, "count.txt") == "20"
    attempts = json.loads(read(run_dir, "checkpointing", 0, 0, "attempts.json"))
    assert [a["from"] for a in attempts] == [0, 8]  # requeued once, continued from its checkpoint
    assert [read(run_dir, "fanout", 0, t, "seen.txt") for t in (0, 1)] == [f"fanout {t} saw total=10" for t in (0, 1)]
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["code"]["path"] == str(ROOT) and (run_dir / "config" / "points.json").exists()
    st = cli.status()
    assert st["state"] == "COMPLETED" and all(s["tasks"]["completed"] == s["tasks"]["total"] for s in st["stages"])
    assert cli("status", "latest").returncode == 0
    # no partial output folders are left behind
    assert not list(run_dir.glob("stages/*/out/*/.*"))


def test_failed_task_cancels_children_and_resume_reruns_exactly_it(cli):
    p = cli("run", "pipeline=smoke", "cluster=local", "pipeline.vars.fail_once_task=2", "wait=true", "poll_s=0.3",
            check=False)
    assert p.returncode == 1
    st = cli.status()
    counts = stage_counts(st)
    assert st["state"] == "FAILED" and cli("status", "latest", check=False).returncode == 1
    assert counts["shards"]["completed"] == 3 and counts["shards"]["failed"] == 1
    assert counts["reduce"]["cancelled"] == 1 and counts["checkpointing"]["cancelled"] == 1
    assert counts["fanout"]["completed"] == 2  # afterany: ran although reduce never did
    failed = json.loads(next(cli.run_dir().glob("stages/shards/markers/*/2.failed")).read_text())
    assert "status 3" in failed["error"]

    before = len(cli.ledger())
    out = cli("resume", "latest").stdout
    new = cli.ledger()[before:]
    assert [(r["stage"], r["tasks"]) for r in new] == [("shards", [2]), ("reduce", [0]), ("checkpointing", [0])]
    assert new[1]["dependency"] == f"afterok:{new[0]['job_id']}"
    assert "resubmitting 1 task(s) [2]" in out
    assert cli.wait()["state"] == "COMPLETED"
    assert read(cli.run_dir(), "reduce", 0, 0, "total.txt") == "10"

    after = len(cli.ledger())
    assert "nothing to resume" in cli("resume", "latest").stdout
    assert len(cli.ledger()) == after


def test_multirun_sweep_is_bigger_arrays_not_more_jobs(cli):
    cli("run", "-m", "pipeline=smoke", "cluster=local", "pipeline.vars.scale=1,2,3", "wait=true", "poll_s=0.3")
    ledger = cli.ledger()
    assert len(ledger) == 4  # one sbatch per stage, as without -m
    assert {r["stage"]: len(r["tasks"]) for r in ledger} == {"shards": 12, "reduce": 3, "fanout": 6, "checkpointing": 3}
    assert next(r for r in ledger if r["stage"] == "checkpointing")["dependency"].startswith("aftercorr:")
    run_dir = cli.run_dir()
    assert [read(run_dir, "reduce", p, 0, "total.txt") for p in range(3)] == ["10", "20", "30"]
    assert [c["pipeline"]["vars"]["scale"] for c in point_configs.read_all(run_dir)] == [1, 2, 3]
    assert not list((run_dir / "config").glob("point-*.json"))  # one file for all points


def test_resume_refuses_a_changed_config_unless_forced(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf)
    root = tmp_path / "runs"
    root.mkdir()
    cli = CLI(root, env={"LAUNCHER_CONF_DIR": str(conf)})
    cli("run", "pipeline=smoke", "cluster=local", "pipeline.vars.fail_once_task=1", "wait=true", "poll_s=0.3",
        check=False)
    smoke = conf / "pipeline" / "smoke.yaml"
    smoke.write_text(smoke.read_text().replace("fanout $LAUNCHER_TASK_INDEX saw", "fanout $LAUNCHER_TASK_INDEX now saw"))
    p = cli("resume", "latest", check=False)
    assert p.returncode == 1 and "fanout" in p.stderr and "--force" in p.stderr
    assert "shards" not in p.stderr.split("changed")[0]  # only the edited stage
    before = len(cli.ledger())
    cli("resume", "latest", "--force")
    new = cli.ledger()[before:]
    # the failed shard and its cancelled children, plus both fanout tasks under the new config
    assert {r["stage"]: r["tasks"] for r in new} == {"shards": [1], "reduce": [0], "fanout": [0, 1],
                                                      "checkpointing": [0]}
    assert cli.wait()["state"] == "COMPLETED"
    assert "now saw" in read(cli.run_dir(), "fanout", 0, 0, "seen.txt")
    assert len(list(cli.run_dir().glob("plan.*.json"))) == 1  # the old plan is kept


def test_two_resumes_at_once_submit_once(cli):
    cli("run", "pipeline=smoke", "cluster=local", "pipeline.vars.fail_once_task=0", "wait=true", "poll_s=0.3",
        check=False)
    before = len(cli.ledger())
    procs = [subprocess.Popen([sys.executable, "-m", "launcher", "resume", "latest"], cwd=cli.run_root, env=cli.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    batches = {r["batch"] for r in cli.ledger()[before:]}
    assert len(batches) == 1, outs
    assert sum("nothing to resume" in o for o, _ in outs) == 1
    assert cli.wait()["state"] == "COMPLETED"


def test_cancel_stops_queued_and_running_tasks(cli):
    cli("run", "pipeline=smoke", "cluster=local", "pipeline.stages.checkpointing.params.step_s=1",
        "pipeline.stages.checkpointing.params.force_requeue_at=null", "pipeline.stages.checkpointing.params.target=120")
    deadline = time.time() + 60
    while stage_counts(cli.status())["checkpointing"]["running"] == 0:
        assert time.time() < deadline
        time.sleep(0.3)
    assert "cancelled 1 job(s)" in cli("cancel", "latest").stdout
    st = cli.wait(timeout=30)
    assert st["state"] == "FAILED" and stage_counts(st)["checkpointing"]["cancelled"] == 1


def test_logs_and_runs(cli):
    cli("run", "pipeline=smoke", "cluster=local", "wait=true", "poll_s=0.3", "run_name=logs")
    assert "shard 3 of point 0 wrote 4" in cli("logs", "latest", "shards", "--task", "3").stdout
    assert "attempt 2" in cli("logs", "latest", "checkpointing", "--follow").stderr
    p = cli("logs", "latest", "nope", check=False)
    assert p.returncode == 66 and "no stage 'nope'" in p.stderr
    assert cli.run_dir().name in cli("runs").stdout


def test_preflight_failure_writes_and_submits_nothing(cli):
    p = cli("run", "pipeline=smoke", "cluster=local", "pipeline.stages.shards.resources.gpus_per_node=1", check=False)
    assert p.returncode == 1 and "stage 'shards': pipeline.stages.shards.resources.gpus_per_node" in p.stderr
    assert list(cli.run_root.iterdir()) == []


def test_python_and_command_stages_checkpoint_and_requeue(cli):
    cli("run", "pipeline=requeue", "cluster=local", "wait=true", "poll_s=0.3")
    run_dir = cli.run_dir()
    assert read(run_dir, "command_counter", 0, 0, "count.txt") == "30"
    assert read(run_dir, "command_counter", 0, 0, "restarts.txt") == "1"
    assert read(run_dir, "python_counter", 0, 0, "count.txt") == "30"
    log = cli("logs", "latest", "command_counter").stdout
    assert "stop signal at 10: saved" in log and "attempt 2 starts at 10" in log


def test_resume_completes_a_submission_that_was_killed_halfway(cli, monkeypatch):
    """The launcher dies after two sbatch calls (no rollback: as if SIGKILLed); resume submits only
    the stages that never reached the scheduler, depending on the jobs that did."""
    import os

    from launcher.run import ops
    from launcher.local.backend import Local

    real_submit, calls = Local.submit, []

    def dying_submit(self, script, dependency):
        if len(calls) == 2:
            raise KeyboardInterrupt  # BaseException: submit_all does not roll back, like a kill
        calls.append(script)
        return real_submit(self, script, dependency)

    monkeypatch.setattr(Local, "submit", dying_submit)
    monkeypatch.chdir(cli.run_root)
    monkeypatch.setenv("LAUNCHER_RUN_ROOT", str(cli.run_root))
    try:
        ops.launch(["pipeline=smoke", "cluster=local", f"run_root={cli.run_root}"], False, echo=lambda *_: None)
    except KeyboardInterrupt:
        pass
    monkeypatch.setattr(Local, "submit", real_submit)
    assert [r["stage"] for r in cli.ledger()] == ["shards", "reduce"]
    st = cli.status()
    assert stage_counts(st)["fanout"]["missing"] == 2 and st["state"] != "COMPLETED"
    cli("resume", "latest")
    new = cli.ledger()[2:]
    assert [r["stage"] for r in new] == ["fanout", "checkpointing"]
    reduce_job = cli.ledger()[1]["job_id"]
    # reduce may still be queued (then the new jobs wait for it) or done already (then no dependency)
    assert all(r["dependency"] in (None, f"afterany:{reduce_job}", f"afterok:{reduce_job}") for r in new)
    assert cli.wait()["state"] == "COMPLETED"
    assert os.path.exists(layout.output_dir(cli.run_dir(), "fanout", 0, 1) / "seen.txt")


def test_resume_of_a_shuffled_sweep_keeps_each_points_index(cli):
    # shuffle() orders the points anew on each expansion (Hydra's basic sweeper); resume must find the same
    # points and keep the index each one's markers were written under
    cli("run", "-m", "pipeline=smoke", "cluster=local", "pipeline.vars.scale=shuffle(range(1,7))",
        "pipeline.vars.fail_once_task=1", "~pipeline.stages.fanout", "~pipeline.stages.checkpointing",
        "wait=true", "poll_s=0.3", check=False)
    points = json.loads((cli.run_dir() / "run.json").read_text())["points"]
    cli("resume", "latest")
    assert cli.wait()["state"] == "COMPLETED"
    scales = [int(next(o for o in p if o.startswith("pipeline.vars.scale=")).split("=")[1]) for p in points]
    assert sorted(scales) == list(range(1, 7))
    assert [read(cli.run_dir(), "reduce", i, 0, "total.txt") for i in range(6)] == [str(10 * s) for s in scales]


@pytest.mark.extended
def test_real_time_limit_requeues_and_ends_with_exact_count_locally(cli):
    """The local twin of test_dev_slurm's time-limit test: a 1-minute limit, the pre-timeout USR2 50 s
    ahead of it (at 10 s), 15 s of work: signal -> checkpoint -> requeue -> continue, until done. The
    signal must reach the task, not kill its batch shell (launcher.local.driver.signal_steps)."""
    ck = "pipeline.stages.checkpointing"
    cli("run", "pipeline=smoke", "cluster=local", "wait=true", "poll_s=0.5", f"{ck}.resources.time=1",
        f"{ck}.params.step_s=0.25", f"{ck}.params.target=60", f"{ck}.params.force_requeue_at=null",
        f"{ck}.requeue.signal_delay_s=50", f"{ck}.requeue.max=5", timeout=400)
    st = cli.status()
    assert st["state"] == "COMPLETED", st
    run_dir = cli.run_dir()
    assert read(run_dir, "checkpointing", 0, 0, "count.txt") == "60"
    attempts = json.loads(read(run_dir, "checkpointing", 0, 0, "attempts.json"))
    assert len(attempts) >= 2 and attempts[1]["from"] > 0
    assert "caught SIGUSR2" in cli("logs", "latest", "checkpointing").stderr


def test_resume_composes_with_the_config_dirs_the_run_was_launched_with(cli, tmp_path):
    mine = tmp_path / "mine"
    (mine / "pipeline").mkdir(parents=True)
    (mine / "pipeline" / "mypipe.yaml").write_text(
        "defaults: [schema, _self_]\nname: mypipe\nstages:\n  hello: {kind: command, command: echo hi}\n")
    cli("run", "--config-dir", str(mine), "pipeline=mypipe", "cluster=local", "wait=true", "poll_s=0.3")
    # no --config-dir, no $LAUNCHER_CONFIG_DIRS: the run's recorded directories
    assert "nothing to resume" in cli("resume", "latest").stdout
