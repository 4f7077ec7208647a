"""`launcher status` and `launcher logs` on the real dev cluster say why pending tasks wait, in Slurm's
words (issue 18 item 4): a stage held by a dependency on a job outside the run shows Reason=Dependency
and what it waits for, a user-held array job JobHeldUser, a %1 throttle JobArrayTaskLimit; `logs` of such a
task says why it has no log. (Parsing and the query: tests/unit/test_status.py; local: test_status_detail.py.)"""
import time
from pathlib import Path

import pytest
from conftest import job_of, slurm

pytestmark = pytest.mark.slurm

SMOKE = ["pipeline=smoke", "cluster=dev", "pipeline.stages.shards.throttle=1"]


def outside_job(env) -> str:
    """A held job of its own (not the run's), as a user would have queued it."""
    return slurm(env, "sbatch", "--parsable", "--hold", "--partition=debug", "--time=00:02:00",
                 "--output=/dev/null", "--wrap", "sleep 1").strip().split(";")[0]


def pending_reasons(dcli, stage: str) -> list:
    st = next(s for s in dcli.status()["stages"] if s["name"] == stage)
    return [(t["reason"], tuple(t["waiting_for"] or ())) for t in st["array"] if t["state"] == "pending"]


def test_status_shows_why_tasks_wait_from_squeue(dcli, dev_slurm):
    held = outside_job(dev_slurm)
    try:
        dcli("run", *SMOKE, fr"+pipeline.stages.shards.after={{job\:{held}: afterok}}")
        deadline = time.time() + 60  # slurmctld's scheduler looks at new jobs within seconds (Reason=None until then)
        while time.time() < deadline and any(r is None for r, _ in pending_reasons(dcli, "shards")):
            time.sleep(0.5)
        assert set(pending_reasons(dcli, "shards")) == {("Dependency", (f"job {held}",))}
        assert set(pending_reasons(dcli, "reduce")) == {("Dependency", ("shards",))}
        table = dcli("status", "latest", check=False)
        assert table.returncode == 2 and f"4 waiting for job {held}" in table.stdout, table.stdout
        logs = dcli("logs", "latest", "shards", "--task", "1")
        assert logs.stdout == "" and f"pending, waiting for job {held}; it has not started" in logs.stderr

        shards = job_of(dcli, "shards")
        slurm(dev_slurm, "scontrol", "uhold", shards)  # now the run's own job is held as well (a user hold)
        time.sleep(1)
        assert {r for r, _ in pending_reasons(dcli, "shards")} == {"JobHeldUser"}
        slurm(dev_slurm, "scontrol", "release", shards)
        slurm(dev_slurm, "scontrol", "release", held)

        seen, deadline = set(), time.time() + 60  # the %1 throttle: one shard runs, the others wait on it
        while time.time() < deadline and "JobArrayTaskLimit" not in seen:
            seen |= {r for r, _ in pending_reasons(dcli, "shards")}
            time.sleep(0.3)
        assert "JobArrayTaskLimit" in seen, seen
        dcli("cancel", "latest")
        st = dcli.wait(timeout=120)
        never = [t for s in st["stages"] for t in s["array"] if t["state"] == "cancelled"]
        assert never and all(t["log"]["stdout"].endswith(f"{t['job']}_0_log.out") for t in never)
        # a task cancelled before it started has no log file (one cancelled while running has one)
        stage, task = next((s["name"], t["task"]) for s in st["stages"] for t in s["array"]
                           if t["state"] == "cancelled" and not Path(t["log"]["stdout"]).exists())
        p = dcli("logs", "latest", stage, "--task", str(task))
        assert "no log for" in p.stderr and ("cancelled before it started" in p.stderr or "never ran" in p.stderr)
    finally:
        slurm(dev_slurm, "scancel", held)
