"""`launcher logs` of a multi-node task: rank 0's files by default (the batch script's own), a note naming
the other ranks that wrote logs, `--rank N` for one of them and `--rank all` for every one, in rank order.
(The files are written here as srun's `%A_%a_%t_log` pattern would name them; the real multi-node runs:
tests/integration/test_multinode.py.)"""
from pathlib import Path

import pytest

from jobs import layout
from launcher.cli import main
from launcher.run.rundir import Run


def planned_run(tmp_path: Path, capsys) -> Path:
    assert main(["plan", "pipeline=smoke", "cluster=local", f"run_root={tmp_path}"]) == 0
    capsys.readouterr()
    d = next((tmp_path / "plans").iterdir())
    Run(d).append_ledger({"job_id": "7", "stage": "shards", "chunk": 0, "offset": 0, "tasks": [0, 1, 2, 3]})
    logs = layout.stage_dir(d, "shards") / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for rank in (0, 1, 2):
        (logs / f"7_2_{rank}_log.out").write_text(f"out of rank {rank}\n")
        (logs / f"7_2_{rank}_log.err").write_text(f"err of rank {rank}\n")
    (logs / "7_3_0_log.out").write_text("task 3\n")  # another task's: never shown with task 2's
    return d


def test_rank_zero_by_default_and_the_other_ranks_named(tmp_path, capsys):
    d = planned_run(tmp_path, capsys)
    assert main(["logs", str(d), "shards", "--task", "2"]) == 0
    out, err = capsys.readouterr()
    assert out == "out of rank 0\n" and "err of rank 0" in err
    assert "ranks 1, 2 of shards[2] wrote logs too: --rank N, or --rank all" in err


def test_one_rank_or_all_of_them_in_rank_order(tmp_path, capsys):
    d = planned_run(tmp_path, capsys)
    assert main(["logs", str(d), "shards", "--task", "2", "--rank", "2"]) == 0
    out, err = capsys.readouterr()
    assert out == "out of rank 2\n" and "shards[2] rank 2 stdout" in err and "wrote logs too" not in err
    assert main(["logs", str(d), "shards", "--task", "2", "--rank", "all"]) == 0
    out, err = capsys.readouterr()
    assert out == "out of rank 0\nout of rank 1\nout of rank 2\n" and "task 3" not in out
    assert err.index("err of rank 0") < err.index("err of rank 1") < err.index("err of rank 2")


def test_a_rank_that_is_not_a_number_is_refused(tmp_path, capsys):
    d = planned_run(tmp_path, capsys)
    with pytest.raises(SystemExit) as e:
        main(["logs", str(d), "shards", "--task", "2", "--rank", "first"])
    assert e.value.code == 64  # EX_USAGE, as for every usage error (launcher/exitcodes.py)
    assert "expected a rank (0, 1, ...) or 'all', not 'first'" in capsys.readouterr().err
