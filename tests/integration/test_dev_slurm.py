"""Acceptance on a REAL Slurm (slurmctld, slurmd, slurmdbd + MariaDB, munge) from scripts/dev-slurm."""
import json
import time

import pytest
from conftest import queued, slurm, stage_counts

from jobs import layout

pytestmark = pytest.mark.slurm


def sacct_jobs(env, ids) -> dict:
    out = slurm(env, "sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(ids))
    jobs = {}
    for line in out.splitlines():
        jid, state = line.split("|")
        base, _, idx = jid.partition("_")
        jobs.setdefault(base, {})[idx.strip("[]")] = state  # never-started tasks show as 12_[0]
    return jobs


def test_plan_prints_the_dag_and_queues_nothing(dcli, dev_slurm):
    out = dcli("plan", "pipeline=smoke", "cluster=dev").stdout
    assert "shards:afterok" in out and "reduce:afterany" in out and "4 sbatch call(s)" in out
    scripts = list(dcli.run_root.glob("plans/*/stages/*/scripts/s0-0.sbatch"))
    assert len(scripts) == 4 and "#SBATCH --partition=debug" in scripts[0].read_text()
    assert queued(dev_slurm, root=dcli.run_root) == set()


def test_run_returns_fast_and_completes_one_array_per_stage(dcli, dev_slurm):
    t0 = time.perf_counter()
    dcli("run", "pipeline=smoke", "cluster=dev")
    elapsed = time.perf_counter() - t0
    assert elapsed < 5, f"launcher run took {elapsed:.1f} s"
    st = dcli.wait(timeout=180)
    assert st["state"] == "COMPLETED"
    assert all(s["tasks"]["completed"] == s["tasks"]["total"] for s in st["stages"])
    ids = [j for s in st["stages"] for j in s["job_ids"]]
    assert len(ids) == 4
    # Markers are written before a task's job ends, and slurmdbd records the end a moment later still
    # (under load, a requeued task may read REQUEUED/RUNNING here): wait for accounting to settle.
    deadline = time.time() + 60
    while True:
        jobs = sacct_jobs(dev_slurm, ids)
        if time.time() > deadline or not any(st in ("PENDING", "RUNNING", "REQUEUED", "COMPLETING")
                                             for t in jobs.values() for st in t.values()):
            break
        time.sleep(1)
    assert {j: sorted(t) for j, t in jobs.items()} == {
        ids[0]: ["0", "1", "2", "3"], ids[1]: ["0"], ids[2]: ["0", "1"], ids[3]: ["0"]}
    assert all(state == "COMPLETED" for t in jobs.values() for state in t.values())
    assert layout.output_dir(dcli.run_dir(), "reduce", 0, 0).joinpath("total.txt").read_text().strip() == "10"


def test_multirun_keeps_sbatch_calls_and_requeues_single_array_tasks(dcli, dev_slurm):
    dcli("run", "-m", "pipeline=smoke", "cluster=dev", "pipeline.vars.scale=1,2,3")
    ledger = dcli.ledger()
    assert len(ledger) == 4
    assert {r["stage"]: len(r["tasks"]) for r in ledger} == {"shards": 12, "reduce": 3, "fanout": 6, "checkpointing": 3}
    assert next(r for r in ledger if r["stage"] == "checkpointing")["dependency"].startswith("aftercorr:")
    st = dcli.wait(timeout=240)
    assert st["state"] == "COMPLETED", st
    run_dir = dcli.run_dir()
    totals = [layout.output_dir(run_dir, "reduce", p, 0).joinpath("total.txt").read_text().strip() for p in range(3)]
    assert totals == ["10", "20", "30"]
    # each checkpointing task requeued itself exactly once: `scontrol requeue <jobid>_<task>`, never the array
    for p in range(3):
        attempts = json.loads(layout.output_dir(run_dir, "checkpointing", p, 0).joinpath("attempts.json").read_text())
        assert [a["from"] for a in attempts] == [0, 8], (p, attempts)


def test_failed_task_cancels_reducer_and_resume_finishes(dcli, dev_slurm):
    dcli("run", "pipeline=smoke", "cluster=dev", "pipeline.vars.fail_once_task=2")
    st = dcli.wait(timeout=180)
    counts = stage_counts(st)
    assert st["state"] == "FAILED" and dcli("status", "latest", check=False).returncode == 1
    assert counts["shards"]["failed"] == 1 and counts["reduce"]["cancelled"] == 1
    assert counts["checkpointing"]["cancelled"] == 1 and counts["fanout"]["completed"] == 2
    reduce_id = next(s for s in st["stages"] if s["name"] == "reduce")["job_ids"][0]
    assert sacct_jobs(dev_slurm, [reduce_id])[reduce_id]["0"].startswith("CANCELLED")  # not pending forever

    before = len(dcli.ledger())
    dcli("resume", "latest")
    new = dcli.ledger()[before:]
    assert [(r["stage"], r["tasks"]) for r in new] == [("shards", [2]), ("reduce", [0]), ("checkpointing", [0])]
    assert dcli.wait(timeout=180)["state"] == "COMPLETED"
    after = len(dcli.ledger())
    assert "nothing to resume" in dcli("resume", "latest").stdout and len(dcli.ledger()) == after


def test_arrays_are_chunked_under_max_array_size(dcli):
    dcli("run", "pipeline=smoke", "cluster=dev", "cluster.max_array_size=3")
    ledger = dcli.ledger()
    # a stage's chunks are submitted at once (launcher/run/submit.py): the ledger holds them in the order
    # their sbatch calls returned
    shards = sorted((r for r in ledger if r["stage"] == "shards"), key=lambda r: r["offset"])
    assert [(r["offset"], r["tasks"]) for r in shards] == [(0, [0, 1, 2]), (3, [3])]
    reduce = next(r for r in ledger if r["stage"] == "reduce")
    assert reduce["dependency"] == "afterok:" + ":".join(r["job_id"] for r in shards)
    assert dcli.wait(timeout=180)["state"] == "COMPLETED"


@pytest.mark.parametrize("overrides,needle", [
    (["pipeline.stages.shards.resources.partition=nope"],
     "stage 'shards': pipeline.stages.shards.resources.partition: partition 'nope' does not exist"),
    (["pipeline.stages.reduce.resources.time=05:00:00"],
     "stage 'reduce': pipeline.stages.reduce.resources.time: 05:00:00 (300 min) is over partition 'debug' MaxTime"),
    (["pipeline.stages.fanout.resources.gpus_per_node=9"],
     "stage 'fanout': pipeline.stages.fanout.resources.gpus_per_node: 9 GPUs per node requested"),
    (["+pipeline.stages.reduce.after.nope=afterok"], "stage 'reduce': pipeline.stages.reduce.after.nope: unknown stage"),
    (["+pipeline.stages.shards.after.checkpointing=afterok"], "dependency cycle"),
])
def test_bad_configs_fail_before_anything_is_queued(dcli, dev_slurm, overrides, needle):
    p = dcli("run", "pipeline=smoke", "cluster=dev", *overrides, check=False)
    assert p.returncode == 1 and needle in p.stderr, p.stderr
    assert "nothing was submitted" in p.stderr
    assert queued(dev_slurm, root=dcli.run_root) == set()
    assert not any(dcli.run_root.glob("*/run.json"))


def test_command_and_python_stages_requeue_on_slurm(dcli):
    dcli("run", "pipeline=requeue", "cluster=dev")
    assert dcli.wait(timeout=180)["state"] == "COMPLETED"
    out = layout.output_dir(dcli.run_dir(), "command_counter", 0, 0)
    assert out.joinpath("count.txt").read_text().strip() == "30"
    assert out.joinpath("restarts.txt").read_text().strip() == "1"  # SLURM_RESTART_COUNT after the requeue
    assert "scontrol requeue" in dcli("logs", "latest", "command_counter").stderr


@pytest.mark.slow
def test_real_time_limit_requeues_and_ends_with_exact_count(dcli, dev_slurm):
    """1-minute limit, ~100 s of work: Slurm's pre-timeout USR2 → checkpoint → requeue → continue.
    slurmctld checks limits every 30 s and signals once `remaining <= signal_delay + 30`, so on a
    1-minute job a 10 s delay leaves 20-50 s of work per attempt (30 s would leave almost none)."""
    ck = "pipeline.stages.checkpointing"
    dcli("run", "pipeline=smoke", "cluster=dev", f"{ck}.resources.time=1", f"{ck}.params.step_s=1",
         f"{ck}.params.target=100", f"{ck}.params.force_requeue_at=null", f"{ck}.requeue.signal_delay_s=10",
         f"{ck}.requeue.max=5")
    st = dcli.wait(timeout=600, poll=3)
    assert st["state"] == "COMPLETED", st
    out = layout.output_dir(dcli.run_dir(), "checkpointing", 0, 0)
    assert out.joinpath("count.txt").read_text().strip() == "100"
    attempts = json.loads(out.joinpath("attempts.json").read_text())
    assert len(attempts) >= 2 and attempts[1]["from"] > 0
    assert "caught SIGUSR2" in dcli("logs", "latest", "checkpointing").stderr
