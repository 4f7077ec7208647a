"""launcher/costs.py on captured `sacct -n -P --duplicates -o <SACCT_FIELDS>` output: a job with
several steps, an array (with tasks still pending), a requeued task whose earlier attempt
--duplicates shows, a GPU job's AllocTRES, a site banner. Numbers as seff computes them."""
import pytest

from launcher import costs as accounting
from launcher.costs import SACCT_FIELDS, parse_duration, parse_size, parse_usage, summarize

pytestmark = pytest.mark.unit

assert SACCT_FIELDS == ("JobID", "State", "ElapsedRaw", "AllocCPUS", "TotalCPU", "AllocTRES", "TRESUsageInTot",
                        "MaxRSS", "Start", "Submit")

STEPS = """\
Welcome to the cluster! Maintenance on Friday.
100|COMPLETED|600|4|20:00.001|billing=4,cpu=4,mem=8G,node=1|||2026-12-01T05:00:00|2026-12-01T04:59:00
100.batch|COMPLETED|600|4|05:00.000|cpu=4,mem=8G,node=1|cpu=00:05:00,energy=0,fs/disk=1234,mem=1024M,pages=0,vmem=2G|1024M|2026-12-01T05:00:00|2026-12-01T04:59:00
100.extern|COMPLETED|600|4|00:00.001|billing=4,cpu=4,mem=8G,node=1|cpu=00:00:00,energy=0,fs/disk=0,mem=4K,pages=0,vmem=4K|4K|2026-12-01T05:00:00|2026-12-01T04:59:00
100.0|COMPLETED|590|4|15:00.000|cpu=4,mem=8G,node=1|cpu=00:15:00,energy=0,fs/disk=99,mem=2G,pages=0,vmem=3G|2G|2026-12-01T05:00:05|2026-12-01T04:59:00
"""

ARRAY = """\
200_0|COMPLETED|120|2|01:00.000|billing=2,cpu=2,mem=1G,node=1|||2026-12-01T05:00:00|2026-12-01T04:59:00
200_0.batch|COMPLETED|120|2|01:00.000|cpu=2,mem=1G,node=1|cpu=00:01:00,mem=512M|512M|2026-12-01T05:00:00|2026-12-01T04:59:00
200_1|FAILED|60|2|00:30.000|billing=2,cpu=2,mem=1G,node=1|||2026-12-01T05:00:00|2026-12-01T04:59:00
200_1.batch|FAILED|60|2|00:30.000|cpu=2,mem=1G,node=1|cpu=00:00:30,mem=256M|256M|2026-12-01T05:00:00|2026-12-01T04:59:00
200_[2-3]|PENDING|0|2|00:00:00|billing=2,cpu=2,mem=1G,node=1|||Unknown|2026-12-01T04:59:00
"""

REQUEUED = """\
300_0|REQUEUED|100|1|01:40.000|billing=1,cpu=1,mem=2G,node=1|||2026-12-01T05:00:00|2026-12-01T04:59:00
300_0.batch|CANCELLED|100|1|01:40.000|cpu=1,mem=2G,node=1|cpu=00:01:40,mem=1G|1G|2026-12-01T05:00:00|2026-12-01T04:59:00
300_0|COMPLETED|50|1|00:25.000|billing=1,cpu=1,mem=2G,node=1|||2026-12-01T05:02:00|2026-12-01T04:59:00
300_0.batch|COMPLETED|50|1|00:25.000|cpu=1,mem=2G,node=1|cpu=00:00:25,mem=1536M|1536M|2026-12-01T05:02:00|2026-12-01T04:59:00
"""

GPU = """\
400_0|RUNNING|3600|16|1-00:00:00|billing=16,cpu=16,gres/gpu:a100=2,gres/gpu=2,mem=64G,node=1|||2026-12-01T04:00:00|2026-12-01T04:59:00
400_1|CANCELLED by 1000|1800|16|00:00:00|billing=16,cpu=16,gres/gpu:a100=2,mem=64G,node=1|||2026-12-01T04:00:00|2026-12-01T04:59:00
"""


def test_durations_and_sizes_as_sacct_prints_them():
    assert parse_duration("20:00.001") == pytest.approx(1200.001)
    assert parse_duration("01:02:03") == 3723
    assert parse_duration("1-00:00:00") == 86400
    assert parse_duration("2-01:00:00.5") == pytest.approx(2 * 86400 + 3600.5)
    assert parse_duration("") is None and parse_duration("INVALID") is None
    assert parse_size("8G") == 8 * 1024 ** 3 and parse_size("1008K") == 1008 * 1024
    assert parse_size("2.50M") == int(2.5 * 1024 ** 2) and parse_size("512") == 512 and parse_size("") is None


def test_several_steps_add_their_cpu_time_and_the_largest_step_is_the_memory():
    jobs = parse_usage(STEPS)
    assert list(jobs) == ["100"]
    (a,) = jobs["100"]
    assert a.cpus == 4 and a.elapsed_s == 600 and a.gpus == 0 and a.mem_alloc == 8 * 1024 ** 3
    assert a.cpu_used_s == pytest.approx(300 + 0.001 + 900)  # seff: the steps' TotalCPU summed
    assert a.mem_used == 2 * 1024 ** 3  # seff: the largest step's TRESUsageInTot mem
    s = summarize(jobs)
    assert s["cpu_efficiency"] == pytest.approx(1200.001 / (600 * 4), abs=1e-4)
    assert s["mem_efficiency"] == 0.25 and s["cpu_hours"] == pytest.approx(600 * 4 / 3600)
    assert s["requeues"] == 0 and s["tasks"] == 1


def test_array_tasks_are_jobs_of_their_own_and_pending_ranges_are_skipped():
    jobs = parse_usage(ARRAY)
    assert sorted(jobs) == ["200_0", "200_1"]
    s = summarize(jobs)
    assert s["tasks"] == 2 and s["elapsed_s"] == 180
    assert s["cpu_efficiency"] == pytest.approx((60 + 30) / (120 * 2 + 60 * 2))
    assert s["mem_efficiency"] == pytest.approx((512 + 256) / 2048)
    assert s["mem_peak"] == 512 * 1024 ** 2


def test_a_requeued_task_counts_both_attempts_and_the_time_the_requeue_cost():
    jobs = parse_usage(REQUEUED)
    attempts = jobs["300_0"]
    assert [a.state for a in attempts] == ["REQUEUED", "COMPLETED"]
    assert attempts[0].mem_used == 1024 ** 3 and attempts[1].mem_used == 1536 * 1024 ** 2
    s = summarize(jobs)
    assert s["tasks"] == 1 and s["attempts"] == 2 and s["requeues"] == 1 and s["requeue_lost_s"] == 100
    assert s["elapsed_s"] == 150 and s["cpu_used_hours"] == pytest.approx(125 / 3600, abs=1e-6)


def test_attempts_are_ordered_by_start_whatever_order_sacct_prints():
    lines = REQUEUED.splitlines()
    jobs = parse_usage("\n".join(lines[2:] + lines[:2]))
    assert [a.state for a in jobs["300_0"]] == ["REQUEUED", "COMPLETED"]


def test_an_older_job_that_had_the_same_id_is_not_ours():
    """sacct --duplicates also lists an earlier job with the same id (the controller's ids restarted):
    attempts submitted well before the run's ledger record are dropped; a requeued attempt keeps its
    job's Submit and stays."""
    import time

    old = "300_0|COMPLETED|9000|8|00:00:00|billing=8,cpu=8,mem=2G,node=1|||2026-10-01T05:00:00|2026-10-01T04:00:00\n"
    jobs = parse_usage(old + REQUEUED)
    assert len(jobs["300_0"]) == 3
    ledger = time.mktime(time.strptime("2026-12-01T04:59:30", "%Y-%m-%dT%H:%M:%S"))
    kept = accounting.since(jobs, {"300": ledger})
    assert [a.state for a in kept["300_0"]] == ["REQUEUED", "COMPLETED"]
    assert summarize(kept)["requeues"] == 1


def test_gpu_hours_come_from_alloc_tres():
    jobs = parse_usage(GPU)
    assert jobs["400_0"][0].gpus == 2  # gres/gpu=2, not 2 + the typed entry
    assert jobs["400_1"][0].gpus == 2 and jobs["400_1"][0].state == "CANCELLED"  # typed only
    s = summarize(jobs)
    assert s["gpu_hours"] == pytest.approx(2 * 1.0 + 2 * 0.5) and s["cpu_hours"] == pytest.approx(16 * 1.5)
    assert s["mem_efficiency"] is None  # no step reported memory yet


def test_slurm_usage_is_one_sacct_call_with_duplicates(tmp_path, monkeypatch):
    """Slurm.usage through the real client code (environment cleanup, retries) with a stand-in sacct on
    PATH that prints the captured output and records its arguments."""
    from launcher.slurm.client import Slurm

    (tmp_path / "out.txt").write_text(STEPS + ARRAY + REQUEUED)
    sacct = tmp_path / "sacct"
    sacct.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/argv\ncat {tmp_path}/out.txt\n')
    sacct.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{__import__('os').environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_ID", "999")  # an allocation's variables do not reach the client
    slurm = Slurm({"name": "test"})
    jobs = slurm.usage(["300", "100", "200", "100"])
    assert slurm.calls == {"sacct": 1} and sorted(jobs) == ["100", "200_0", "200_1", "300_0"]
    argv = (tmp_path / "argv").read_text().split()
    assert "--duplicates" in argv and argv[argv.index("-j") + 1] == "100,200,300"
    assert argv[argv.index("-o") + 1] == ",".join(SACCT_FIELDS)
