"""Two `launcher run` of the same keys started at once (cluster=local): each key is computed once, the
second run waits for the first's jobs (launcher/run/inflight.py, cache_lock.py), and when those fail,
resume of the second computes what it was waiting for."""
import json
import subprocess
import sys

from tests.conftest import stage_counts

# shards wait for the flag file (at most 20 s), so the first run is still computing them when the
# second looks them up; the value they write is the smoke pipeline's own
SLOW = ("pipeline.stages.shards.command='for i in $(seq 100); do test -e {flag} && break; sleep 0.2; done; "
        "echo $(( LAUNCHER_TASK_INDEX + 1 )) > $LAUNCHER_OUTPUT_DIR/value.txt'")


def start(cli, *overrides):
    return subprocess.Popen([sys.executable, "-m", "launcher", "run", "pipeline=smoke", "cluster=local",
                             f"run_root={cli.run_root}", *overrides], cwd=cli.cwd, env=cli.env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def runs(cli):
    """Run ids, oldest first (by run.json `created`)."""
    return [p.name for p in sorted((p for p in cli.run_root.iterdir() if (p / "run.json").exists()),
                                   key=lambda p: json.loads((p / "run.json").read_text())["created"])]


def done_markers(cli, stage):
    return sorted(cli.run_root.glob(f"*/stages/{stage}/markers/*/*.done"))


def test_two_identical_runs_at_once_compute_each_key_once_and_both_complete(cli, tmp_path):
    flag = tmp_path / "go"
    slow = SLOW.format(flag=flag)
    procs = [start(cli, slow), start(cli, slow)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    first, second = runs(cli)
    assert sorted("0 job(s) submitted" in o for o in outs) == [False, True], outs  # one of them submitted all
    during = cli.status(second)
    assert during["state"] in ("PENDING", "RUNNING"), during  # it follows the first's jobs, not COMPLETED yet
    flag.touch()
    a, b = cli.wait(first, timeout=120), cli.wait(second, timeout=60)
    assert a["state"] == b["state"] == "COMPLETED"
    assert {n: c["cached"] for n, c in stage_counts(b).items()} == {"shards": 4, "reduce": 1, "fanout": 2,
                                                                    "checkpointing": 1}
    assert len(done_markers(cli, "shards")) == 4 and len(done_markers(cli, "reduce")) == 1  # computed once
    assert not (cli.run_dir(second) / "submissions.jsonl").exists() or not cli.ledger(second)


def test_the_second_waits_on_the_first_and_resume_computes_what_the_first_failed_to(cli, tmp_path):
    flag = tmp_path / "fast"
    slow = SLOW.format(flag=flag)
    cli("run", "pipeline=smoke", "cluster=local", slow)
    first = runs(cli)[0]
    second_run = start(cli, slow, "+pipeline.stages.checkpointing.env.X=other")  # that stage: another key
    out = second_run.communicate(timeout=120)[0]
    assert second_run.returncode == 0, out
    second = runs(cli)[1]
    assert f"afterok:{cli.run_dir(first)}#1" in out, out  # checkpointing waits on the first's shards (and reduce)
    cli("cancel", first)  # the first's shards never complete: the jobs waiting on them are cancelled
    st = cli.wait(second, timeout=90)
    counts = stage_counts(st)
    assert st["state"] == "FAILED", st
    assert counts["shards"]["failed"] == 4 and counts["reduce"]["failed"] == 1  # their source ended unfinished
    assert counts["checkpointing"]["cancelled"] == 1  # dependency never satisfied (kill_invalid_depend)
    flag.touch()
    resumed = cli("resume", second)
    assert "ended without completing" in resumed.stdout, resumed.stdout
    st = cli.wait(second, timeout=120)
    counts = stage_counts(st)
    assert st["state"] == "COMPLETED", st
    assert counts["shards"]["completed"] == 4 and counts["reduce"]["completed"] == 1  # computed here now
    assert counts["checkpointing"]["completed"] == 1
    total = (cli.run_dir(second) / "stages" / "reduce" / "out").glob("**/total.txt")
    assert [p.read_text().strip() for p in total] == ["10"]  # 1+2+3+4: the shards it computed itself
