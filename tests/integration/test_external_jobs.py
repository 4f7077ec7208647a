"""A stage waits on a Slurm job outside the run (`after: {job:N: afterok}`, issue 18 item 4) on the real
dev cluster: the dependency reaches sbatch and holds the stage until the outside job ends; a job Slurm
does not know, or one that failed, is refused before anything is queued, naming stage and key.
(Plan, dependency string and preflight's reading of the states: tests/unit/test_external_jobs.py.)"""
import time

import pytest
from conftest import job_of, queued, slurm

pytestmark = pytest.mark.slurm

SMOKE = ["pipeline=smoke", "cluster=dev"]


def outside_job(env, *sbatch_args) -> str:
    """A job of its own (not the run's), held or not, as a user would have queued it."""
    return slurm(env, "sbatch", "--parsable", "--partition=debug", "--time=00:02:00", "--output=/dev/null",
                 *sbatch_args, "--wrap", "sleep 1").strip().split(";")[0]


def test_a_stage_waits_on_a_job_outside_the_run(dcli, dev_slurm):
    held = outside_job(dev_slurm, "--hold")
    try:
        dcli("run", *SMOKE, fr"+pipeline.stages.shards.after={{job\:{held}: afterok}}")
        shards = next(r for r in dcli.ledger() if r.get("stage") == "shards")
        assert shards["dependency"] == f"afterok:{held}"
        time.sleep(2)
        reason = slurm(dev_slurm, "squeue", "-h", "-j", job_of(dcli, "shards"), "-o", "%r").split()
        assert reason and set(reason) == {"Dependency"}, reason  # waits: the outside job is held
        slurm(dev_slurm, "scontrol", "release", held)
        assert dcli.wait(timeout=240)["state"] == "COMPLETED"
    finally:
        slurm(dev_slurm, "scancel", held)


def test_an_unknown_or_failed_outside_job_is_refused_before_submission(dcli, dev_slurm):
    p = dcli("run", *SMOKE, r"+pipeline.stages.reduce.after={job\:99999999: afterok}", check=False)
    assert p.returncode == 1 and "stage 'reduce': pipeline.stages.reduce.after.job:99999999: no Slurm job 99999999" \
        in p.stderr, p.stderr
    failed = slurm(dev_slurm, "sbatch", "--parsable", "--partition=debug", "--time=00:01:00", "--output=/dev/null",
                   "--wrap", "exit 3").strip().split(";")[0]
    deadline = time.time() + 60
    while time.time() < deadline and failed in queued(dev_slurm):
        time.sleep(0.5)
    p = dcli("run", *SMOKE, fr"+pipeline.stages.reduce.after={{job\:{failed}: afterok}}", check=False)
    assert p.returncode == 1 and f"job {failed} is FAILED: afterok can never hold" in p.stderr, p.stderr
    assert not list(dcli.run_root.glob("*/run.json")) and not queued(dev_slurm, dcli.run_root)
