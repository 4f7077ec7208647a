"""`launcher usage` on the dev cluster (real slurmdbd accounting), checked against an independent
computation from this test's own `sacct` call: per stage, elapsed seconds, allocated CPU-hours, GPU-hours
(a stage on the gpu partition), CPU time used and requeues (the smoke pipeline's checkpointing stage
requeues itself once)."""
import json
import re
import time

import pytest
from conftest import slurm, wait_for

pytestmark = pytest.mark.slurm


def cpu_seconds(text: str) -> float:
    """sacct's TotalCPU, [D-][HH:]MM:SS[.fff], computed here apart from launcher/costs.py."""
    days = 0
    if "-" in text:
        d, text = text.split("-", 1)
        days = int(d)
    parts = [float(x) for x in text.split(":")]
    h, m, s = ([0.0] * (3 - len(parts)) + parts)
    return days * 86400 + h * 3600 + m * 60 + s


def by_hand(env, ledger) -> dict:
    """{stage: {elapsed_s, cpu_hours, gpu_hours, cpu_used_s, requeues}} from one `sacct -D` of the run's jobs."""
    stage_of = {r["job_id"]: r["stage"] for r in ledger if "job_id" in r}
    first = min(r["time"] for r in ledger if "job_id" in r) - 300  # older jobs that had the same ids: not ours
    out = slurm(env, "sacct", "-n", "-P", "-D", "-o", "JobID,ElapsedRaw,AllocCPUS,AllocTRES,TotalCPU,State,Submit",
                "-j", ",".join(stage_of))
    per = {s: {"elapsed_s": 0, "cpu_hours": 0.0, "gpu_hours": 0.0, "cpu_used_s": 0.0, "records": 0, "ids": set()}
           for s in set(stage_of.values())}
    for line in out.splitlines():
        jid, elapsed, cpus, tres, total_cpu, state, submit = line.split("|")
        job = jid.split(".")[0]
        base = re.split(r"[_+]", job)[0]
        if base not in stage_of or "[" in job or time.mktime(time.strptime(submit, "%Y-%m-%dT%H:%M:%S")) < first:
            continue
        st = per[stage_of[base]]
        if "." in jid:  # a step: its CPU time (seff sums the steps)
            st["cpu_used_s"] += cpu_seconds(total_cpu)
            continue
        gpus = int(dict(kv.split("=", 1) for kv in tres.split(",") if "=" in kv).get("gres/gpu", 0))
        st["elapsed_s"] += int(elapsed)
        st["cpu_hours"] += int(cpus) * int(elapsed) / 3600
        st["gpu_hours"] += gpus * int(elapsed) / 3600
        st["records"] += 1
        st["ids"].add(job)
    for st in per.values():
        st["requeues"] = st.pop("records") - len(st.pop("ids"))
    return per


def test_usage_matches_a_hand_computation_from_sacct(dcli, dev_slurm):
    dcli("run", "pipeline=smoke", "cluster=dev", "pipeline.stages.reduce.resources.partition=gpu",
         "pipeline.stages.reduce.resources.gpus_per_node=1", "+pipeline.stages.reduce.params.sleep_s=3")
    assert dcli.wait(timeout=240)["state"] == "COMPLETED"
    ids = [r["job_id"] for r in dcli.ledger() if "job_id" in r]

    def settled() -> bool:  # slurmdbd has every job as ended (it lags slurmctld by a moment)
        states = slurm(dev_slurm, "sacct", "-X", "-n", "-P", "-o", "State", "-j", ",".join(ids)).split()
        return bool(states) and not {"RUNNING", "PENDING", "COMPLETING"} & set(states)

    wait_for(settled, 60, "accounting to record every job as ended")
    got = json.loads(dcli("usage", "latest", "--json").stdout)
    hand = by_hand(dev_slurm, dcli.ledger())
    stages = {s["name"]: s for s in got["runs"][0]["stages"]}
    for name, h in hand.items():
        s = stages[name]
        assert s["elapsed_s"] == h["elapsed_s"], (name, s, h)  # sacct's whole seconds: 0 for an instant echo
        assert s["cpu_hours"] == pytest.approx(h["cpu_hours"], abs=1e-5)
        assert s["gpu_hours"] == pytest.approx(h["gpu_hours"], abs=1e-5)
        assert s["cpu_used_hours"] == pytest.approx(h["cpu_used_s"] / 3600, abs=1e-5)
        assert s["requeues"] == h["requeues"], (name, s, h)
    assert hand["reduce"]["gpu_hours"] > 0 and stages["reduce"]["planned_gpu_hours"] > 0
    # checkpointing requeues itself once (its first attempt lasts under a second: sacct's whole seconds
    # give it 0 lost); the requeue is counted as the hand count from sacct --duplicates says
    assert stages["checkpointing"]["requeues"] >= 1 and stages["checkpointing"]["requeue_lost_s"] >= 0
    assert got["total"]["elapsed_s"] == sum(h["elapsed_s"] for h in hand.values())
