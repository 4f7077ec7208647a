"""A task skipped by its dependency kind is skipped, not failed (issue 15, fault 5).

work (2 tasks) -> alert (afternotok) -> notify (afterok on alert); report waits on alert with afterany.
When every work task succeeds, Slurm cancels alert (its condition can never hold; kill_invalid_depend)
and notify with it: both are "not needed". The run is COMPLETED (exit 0 for wait=true, status and the
schedule wrapper), status shows them skipped, and resume never submits them. Siblings: notify (afterok
on a skipped stage) is skipped too, and report (afterany on a skipped stage) runs."""
import subprocess
import sys

import pytest
from conftest import job_of, slurm, stage_counts
from ledger_helpers import alerting_cli, outputs


def _check_skipped_run(cli, p):
    assert p.returncode == 0 and "COMPLETED" in p.stdout, p.stdout + p.stderr
    st = cli.status()
    counts = stage_counts(st)
    assert st["state"] == "COMPLETED" and cli("status", "latest", check=False).returncode == 0
    assert counts["work"]["completed"] == 2
    assert counts["alert"]["skipped"] == 1 and counts["notify"]["skipped"] == 1
    assert counts["report"]["completed"] == 1  # afterany on a skipped parent: it runs
    assert {s["name"]: s["state"] for s in st["stages"]}["alert"] == "SKIPPED"
    run_dir = cli.run_dir()
    assert not outputs(run_dir, "alert", "alert.txt") and len(outputs(run_dir, "report", "report.txt")) == 1

    before = len(cli.ledger())
    out = cli("resume", "latest").stdout
    assert "nothing to resume" in out and len(cli.ledger()) == before  # alert is never resubmitted
    assert not outputs(run_dir, "alert", "alert.txt")


@pytest.mark.slurm
def test_afternotok_stage_of_a_successful_run_is_skipped_on_slurm(tmp_path, dev_slurm):
    cli = alerting_cli(tmp_path, dev_slurm)
    p = cli("run", "pipeline=alerting", "cluster=dev", "wait=true", "poll_s=0.5", check=False, timeout=240)
    # What Slurm did: it cancelled alert and notify (kill_invalid_depend), it never ran them.
    for stage in ("alert", "notify"):
        jid = job_of(cli, stage)
        assert slurm(dev_slurm, "sacct", "-X", "-n", "-P", "-o", "State", "-j", jid).split()[0] == "CANCELLED"
    _check_skipped_run(cli, p)


def test_afternotok_stage_of_a_successful_run_is_skipped_locally(tmp_path):
    cli = alerting_cli(tmp_path)
    p = cli("run", "pipeline=alerting", "cluster=local", "wait=true", "poll_s=0.3", check=False)
    _check_skipped_run(cli, p)


def test_afternotok_stage_runs_when_work_fails_and_resume_redoes_only_the_failure(tmp_path):
    """The contrast: a work task fails, so alert is needed: it runs, the run is FAILED; resume redoes
    the failed task only (alert's dependency was satisfied, its marker stands)."""
    cli = alerting_cli(tmp_path)
    p = cli("run", "pipeline=alerting", "cluster=local", "pipeline.vars.fail_once_task=1", "wait=true",
            "poll_s=0.3", check=False)
    assert p.returncode == 1
    counts = stage_counts(cli.status())
    assert counts["work"]["failed"] == 1 and counts["alert"]["completed"] == 1 and counts["notify"]["completed"] == 1
    assert len(outputs(cli.run_dir(), "alert", "alert.txt")) == 1
    before = len(cli.ledger())
    cli("resume", "latest")
    assert [(r["stage"], r["tasks"]) for r in cli.ledger()[before:]] == [("work", [1])]
    assert cli.wait()["state"] == "COMPLETED"


def test_schedule_wrapper_does_not_report_a_skipped_stage_as_a_failure(tmp_path):
    from test_schedule import Hook, history

    cli = alerting_cli(tmp_path)
    sdir = cli.run_root / "schedules" / "nightly"
    hook = Hook()
    try:
        p = subprocess.run([sys.executable, "-m", "launcher.run.schedule", "fire", "nightly", "--dir", str(sdir),
                            "--notify-url", hook.url, "--", "run", "pipeline=alerting", "cluster=local", "wait=true",
                            "poll_s=0.3", f"run_root={cli.run_root}"], cwd=tmp_path, env=cli.env, capture_output=True,
                           text=True, timeout=180)
        assert p.returncode == 0, p.stdout + p.stderr
        assert history(sdir)[-1]["status"] == "ok" and hook.received == []
    finally:
        hook.close()
