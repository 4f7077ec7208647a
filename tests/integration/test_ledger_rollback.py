"""A submission that rolls back leaves no run that `latest` or `launcher runs` picks (issue 16, kind 1).

The sbatch failure here is a site wrapper that fails on its second call (the first job is queued and
must be cancelled). The run directory is kept for diagnosis, in place, with submission-failed.json
(error, rolled-back job ids). Siblings: a launch that fails while writing the run, before any sbatch
(two code folders with the same name: issue 16 kind 6), on the local backend; a resume of a rolled-back
launch submits it and makes it a run again. And a guard: a resume whose submission rolls back leaves the
run as it was (still latest: it has jobs)."""
import json

import pytest
from conftest import queued, slurm
from ledger_helpers import path_with, wrap



def failing_sbatch(bin_dir, on_call: int):
    body = (f'n=$(( $(cat {bin_dir}/n 2>/dev/null || echo 0) + 1 )); echo $n > {bin_dir}/n\n'
            f'if [ $n = {on_call} ]; then echo "sbatch: error: Batch job submission failed: '
            f'Requested node configuration is not available" >&2; exit 1; fi')
    wrap(bin_dir, "sbatch", body=body)


@pytest.mark.slurm
def test_rolled_back_launch_is_not_latest(tmp_path, dcli, dev_slurm):
    bin_dir = tmp_path / "bin"
    failing_sbatch(bin_dir, on_call=2)
    env = dict(dcli.env)
    dcli.env.update(path_with(bin_dir))
    p = dcli("run", "pipeline=smoke", "cluster=dev", check=False)
    assert p.returncode == 1 and "Requested node configuration is not available" in p.stderr
    assert "cancelled the 1 job(s)" in p.stderr
    [run_dir] = [d for d in dcli.run_root.iterdir() if (d / "run.json").exists()]

    dcli.env = env  # a plain sbatch from here on
    s = dcli("status", "latest", check=False)
    assert s.returncode == 66 and "no runs under" in s.stderr  # latest never picks it
    assert run_dir.name not in dcli("runs").stdout
    # kept for diagnosis, and the error says where
    assert f"kept for diagnosis: {run_dir}" in p.stderr
    failed = json.loads((run_dir / "submission-failed.json").read_text())
    first = json.loads((run_dir / "submissions.jsonl").read_text().splitlines()[0])["job_id"]
    assert failed["rolled_back"] == [first] and "Requested node configuration" in failed["error"]
    assert queued(dev_slurm, root=dcli.run_root) == set()
    state = slurm(dev_slurm, "sacct", "-X", "-n", "-P", "-o", "State", "-j", first).split()[0]
    assert state == "CANCELLED"

    # resuming it explicitly submits it whole and makes it a run again
    dcli("resume", str(run_dir))
    assert not (run_dir / "submission-failed.json").exists()
    assert dcli.wait(str(run_dir), timeout=180)["state"] == "COMPLETED"
    assert run_dir.name in dcli("runs").stdout


@pytest.mark.slurm
def test_rolled_back_resume_leaves_the_run_as_it_was(tmp_path, dcli, dev_slurm):
    dcli("run", "pipeline=smoke", "cluster=dev", "pipeline.vars.fail_once_task=2")
    assert dcli.wait(timeout=180)["state"] == "FAILED"
    run_dir = dcli.run_dir()
    bin_dir = tmp_path / "bin"
    failing_sbatch(bin_dir, on_call=2)
    env = dict(dcli.env)
    dcli.env.update(path_with(bin_dir))
    before = len(dcli.ledger())
    p = dcli("resume", "latest", check=False)
    assert p.returncode == 1 and "cancelled the 1 job(s)" in p.stderr
    assert not (run_dir / "submission-failed.json").exists()
    dcli.env = env
    st = json.loads(dcli("status", "latest", "--json", check=False).stdout)
    assert st["run"] == run_dir.name and st["state"] == "FAILED"  # as before the resume: nothing left queued
    assert ledger_tail_rolled_back(dcli, before)


def test_launch_failing_while_writing_the_run_is_not_latest(tmp_path, cli):
    for d in ("a", "b"):
        (tmp_path / d / "utils").mkdir(parents=True)
        (tmp_path / d / "utils" / f"{d}.py").write_text("")
    p = cli("run", "pipeline=smoke", "cluster=local", f"pipeline.code=[{tmp_path}/a/utils,{tmp_path}/b/utils]",
            check=False)
    assert p.returncode != 0
    s = cli("status", "latest", check=False)
    assert s.returncode == 66 and "no runs under" in s.stderr, s.stdout + s.stderr
    assert not list(cli.run_root.glob("*/submissions.jsonl"))  # nothing was queued


def ledger_tail_rolled_back(cli, before: int) -> bool:
    """Every job the failed resume queued is recorded as rolled back."""
    new = cli.ledger()[before:]
    return {r["job_id"] for r in new if "job_id" in r} == set(new[-1]["rolled_back"])
