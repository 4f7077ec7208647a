"""A `%` in the run directory is a folder name, not a Slurm filename pattern (issue 15, fault 9).

Slurm expands %x, %j, %A... (and reads %% as %) in --output/--error of sbatch and srun; the local driver
does the same for %A/%a/%j. Listed: %x, %j and %% in the run root, on Slurm and locally; `launcher logs`
finds the log. Siblings: a backslash in the run root (Slurm cannot take it in a pattern at all: refused
before anything is submitted, with the key), and the scrontab entry of `launcher schedule` (its --output
is a pattern too: tests/unit/test_ledger.py). run_name cannot hold a % (the plan allows [A-Za-z0-9_.-])."""
import pytest
from conftest import CLI, queued

from jobs import layout

WEIRD = "runs%x%j%%A"


def weird_cli(tmp_path, env=None) -> CLI:
    root = tmp_path / WEIRD
    root.mkdir()
    return CLI(root, env=env)


def check_logs(cli):
    st = cli.status()
    assert st["state"] == "COMPLETED", st
    run_dir = cli.run_dir()
    assert "%x%j%%A" in str(run_dir)
    # every task's log is in the run directory, where `launcher logs` looks
    assert "shard 3 of point 0 wrote 4" in cli("logs", "latest", "shards", "--task", "3").stdout
    rec = next(r for r in cli.ledger() if r["stage"] == "shards")
    logs = layout.stage_dir(run_dir, "shards") / "logs"
    assert sorted(p.name for p in logs.glob(f"{rec['job_id']}_*_0_log.out")) == [
        f"{rec['job_id']}_{i}_0_log.out" for i in range(4)]


@pytest.mark.slurm
def test_percent_in_run_root_on_slurm(tmp_path, dev_slurm):
    cli = weird_cli(tmp_path, dev_slurm)
    cli("run", "pipeline=smoke", "cluster=dev")
    assert cli.wait(timeout=180)["state"] == "COMPLETED"
    check_logs(cli)
    # nothing was written outside the run directory (e.g. a folder named after the expanded pattern)
    assert sorted(p.name for p in tmp_path.iterdir()) == [WEIRD]


def test_percent_in_run_root_locally(tmp_path):
    cli = weird_cli(tmp_path)
    cli("run", "pipeline=smoke", "cluster=local", "wait=true", "poll_s=0.3")
    check_logs(cli)
    assert sorted(p.name for p in tmp_path.iterdir()) == [WEIRD]


@pytest.mark.slurm
def test_backslash_in_run_root_is_refused_before_anything_is_written(tmp_path, dev_slurm):
    cli = CLI(tmp_path, env=dev_slurm)
    p = cli("run", "pipeline=smoke", "cluster=dev", f"run_root={tmp_path}/a\\\\b", check=False)
    assert p.returncode == 1 and "run_root: " in p.stderr and "backslash" in p.stderr, p.stderr
    assert "nothing was submitted" in p.stderr and "Traceback" not in p.stderr
    assert not any((tmp_path / "a\\b").iterdir()) and queued(dev_slurm, root=tmp_path) == set()
