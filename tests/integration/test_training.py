"""Training stages on the real dev Slurm: torchrun under srun (kind=torchrun, the launch path of
nanotron), and a small-model ablation campaign with the hf backend: one array job per stage over
the sweep, checkpoints at a fixed token interval, and a run killed by its time limit that resumes
and ends exactly where an uninterrupted run with the same seed ends."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobs import layout
from jobs.demo_corpus import make_corpus

from conftest import CLI, slurm

pytestmark = pytest.mark.slow


def test_torchrun_ranks_meet_at_the_first_nodes_rendezvous(dcli, dev_slurm, cpu_python):
    dcli("run", "pipeline=distributed", "cluster=dev", "pipeline.vars.nproc_per_node=2")
    st = dcli.wait(timeout=300, poll=1)
    assert st["state"] == "COMPLETED", st
    out = layout.output_dir(dcli.run_dir(), "probe", 0, 0)
    ranks = [json.loads(p.read_text()) for p in sorted(out.glob("rank-*.json"))]
    assert sorted(r["rank"] for r in ranks) == [0, 1]
    assert {r["world_size"] for r in ranks} == {2} and {r["all_reduce"] for r in ranks} == {2.0}
    assert len({(r["master_addr"], r["master_port"]) for r in ranks}) == 1
    job = next(r["job_id"] for r in dcli.ledger() if "job_id" in r)
    log = "".join(p.read_text() for p in (dcli.run_dir() / "stages" / "probe" / "logs").glob("*.err"))
    node = slurm(dev_slurm, "scontrol", "show", "hostnames", "localhost").split()[0]
    # the first node of the allocation, and the per-job port (base 20000 + job id % 10000)
    assert f"--rdzv-endpoint={node}:{20000 + int(job) % 10000}" in log, log[-2000:]


def test_a_dying_rank_fails_the_task_with_a_failure_marker(dcli, cpu_python):
    dcli("run", "pipeline=distributed", "cluster=dev", "+pipeline.stages.probe.env.PROBE_FAIL_RANK=1")
    st = dcli.wait(timeout=300, poll=1)
    assert st["state"] == "FAILED", st
    plan = json.loads((dcli.run_dir() / "plan.json").read_text())
    failed = layout.marker_path(dcli.run_dir(), "probe", plan["stages"][0]["hash"], 0, "failed")
    assert "torchrun exited with status" in json.loads(failed.read_text())["error"]
