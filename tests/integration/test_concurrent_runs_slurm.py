"""Two runs of the same keys at once on the dev cluster (launcher/run/inflight.py): one of them submits, the
other submits nothing for those keys and its other stages wait with `afterok:<the first's job id>`;
when the first's jobs are cancelled, the waiting job is cancelled by Slurm (kill_invalid_depend) and
resume of the second computes the keys itself."""
import subprocess
import sys

from tests.conftest import stage_counts
from tests.integration.test_concurrent_runs import SLOW, done_markers, runs


def start(cli, *overrides):
    return subprocess.Popen([sys.executable, "-m", "launcher", "run", "pipeline=smoke", "cluster=dev",
                             f"run_root={cli.run_root}", *overrides], cwd=cli.cwd, env=cli.env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_two_identical_runs_at_once_submit_each_key_once(dcli, tmp_path):
    flag = tmp_path / "go"
    procs = [start(dcli, SLOW.format(flag=flag)) for _ in range(2)]
    outs = [p.communicate(timeout=180)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    first, second = runs(dcli)
    assert [len(dcli.ledger(first)) > 0, len(dcli.ledger(second))] == [True, 0], outs  # sbatch calls: 4 and 0
    flag.touch()
    assert dcli.wait(first, timeout=240)["state"] == "COMPLETED"
    st = dcli.wait(second, timeout=60)
    assert st["state"] == "COMPLETED" and stage_counts(st)["shards"]["cached"] == 4
    assert len(done_markers(dcli, "shards")) == 4


def test_the_second_waits_with_afterok_on_the_first_job_and_resume_recovers_when_it_fails(dcli, tmp_path):
    flag = tmp_path / "go"
    dcli("run", "pipeline=smoke", "cluster=dev", SLOW.format(flag=flag))
    first = runs(dcli)[0]
    shards_job = next(r["job_id"] for r in dcli.ledger(first) if r.get("stage") == "shards")
    dcli("run", "pipeline=smoke", "cluster=dev", SLOW.format(flag=flag), "+pipeline.stages.checkpointing.env.X=b")
    second = runs(dcli)[1]
    (rec,) = dcli.ledger(second)  # checkpointing only: shards, reduce, fanout are the first's
    assert rec["stage"] == "checkpointing" and f"afterok:{shards_job}" in rec["dependency"], rec
    dcli("cancel", first)
    st = dcli.wait(second, timeout=180)
    counts = stage_counts(st)
    assert st["state"] == "FAILED" and counts["shards"]["failed"] == 4, st
    assert counts["checkpointing"]["cancelled"] == 1, st  # Slurm: DependencyNeverSatisfied, kill_invalid_depend
    flag.touch()
    assert "ended without completing" in dcli("resume", second).stdout
    st = dcli.wait(second, timeout=240)
    counts = stage_counts(st)
    assert st["state"] == "COMPLETED" and counts["shards"]["completed"] == 4 and counts["checkpointing"]["completed"] == 1
