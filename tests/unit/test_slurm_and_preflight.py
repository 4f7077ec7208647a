"""Parsing Slurm's answers and checking stages against them (sample output of Slurm 22.05)."""
import pytest

from launcher.config.compose import compose
from launcher.plan.model import build_plan
from launcher.plan.preflight import preflight
from launcher.slurm.accounting import parse_sacct
from launcher.slurm.facts import parse_cluster_info

CONFIG = "Configuration data as of 2026-11-23T10:00:00\nMaxArraySize            = 1001\nMaxJobCount = 20000\n"
PARTITIONS = (
    "PartitionName=debug AllowGroups=ALL Default=YES MaxNodes=UNLIMITED MaxTime=04:00:00 Nodes=localhost State=UP TotalCPUs=16\n"
    "PartitionName=gpu AllowGroups=ALL Default=NO MaxNodes=1 MaxTime=1-00:00:00 Nodes=localhost State=UP TotalCPUs=16\n"
)
NODES = ("NodeName=localhost Arch=x86_64 CoresPerSocket=1 CPUAlloc=0 CPUTot=16 CPULoad=0.10 Gres=gpu:4 "
         "NodeAddr=127.0.0.1 RealMemory=23000 Partitions=debug,gpu State=IDLE ThreadsPerCore=1\n")


def info():
    return parse_cluster_info(CONFIG, PARTITIONS, NODES)


def test_cluster_info():
    i = info()
    assert i.max_array_size == 1001 and i.default_partition == "debug" and i.max_job_count == 20000
    assert i.partitions["debug"].max_time_min == 240 and i.partitions["gpu"].max_time_min == 1440
    assert i.partitions["gpu"].max_nodes == 1
    node = i.partitions["debug"].nodes[0]
    assert (node.cpus, node.mem_mb, node.gpus) == (16, 23000, 4)


@pytest.mark.parametrize("gres,gpus", [("gpu:4", 4), ("gpu:a100:8(S:0-1)", 8), ("gpu:h100:4,shard:8", 4), ("(null)", 0)])
def test_gres_gpu_count(gres, gpus):
    i = parse_cluster_info(CONFIG, PARTITIONS, NODES.replace("Gres=gpu:4", f"Gres={gres}"))
    assert i.partitions["debug"].nodes[0].gpus == gpus


def test_sacct_array_states():
    text = "\n".join(["12_0|COMPLETED", "12_1|FAILED", "12_2|CANCELLED by 0", "12_[3-5%2]|PENDING", "13_0|RUNNING",
                      "14_0|TIMEOUT", "15_1|REQUEUED", "16_0|OUT_OF_MEMORY", "17|COMPLETED"])
    s = parse_sacct(text)
    assert s["12"] == {0: "completed", 1: "failed", 2: "cancelled", 3: "pending", 4: "pending", 5: "pending"}
    assert s["13"] == {0: "running"} and s["14"] == {0: "failed"} and s["15"] == {1: "pending"}
    assert s["16"] == {0: "failed"} and "17" not in s


def dev_plan(*overrides):
    cfg = compose(["pipeline=smoke", "cluster=dev", *overrides])
    return build_plan([cfg], [[]])


def problems(tmp_path, *overrides, assoc=None):
    return [(e.stage, e.key, e.message) for e in preflight(dev_plan(*overrides), tmp_path, info(), associations=assoc)]


def test_smoke_passes_preflight(tmp_path):
    assert problems(tmp_path) == []


@pytest.mark.parametrize("override,key,words", [
    ("pipeline.stages.shards.resources.partition=nope", "pipeline.stages.shards.resources.partition", "does not exist"),
    ("pipeline.stages.shards.resources.time=05:00:00", "pipeline.stages.shards.resources.time", "MaxTime"),
    ("pipeline.stages.shards.resources.gpus_per_node=9", "pipeline.stages.shards.resources.gpus_per_node", "at most|largest: 4"),
    ("pipeline.stages.shards.resources.cpus_per_task=17", "pipeline.stages.shards.resources.cpus_per_task", "largest: 16"),
    ("pipeline.stages.shards.resources.mem_gb=64", "pipeline.stages.shards.resources.mem_gb", "largest"),
    ("pipeline.stages.shards.resources.nodes=2", "pipeline.stages.shards.resources.nodes", "has 1"),
    ("pipeline.stages.shards.command='if then'", "pipeline.stages.shards.command", "not valid bash"),
])
def test_preflight_names_stage_and_key(tmp_path, override, key, words):
    import re

    found = problems(tmp_path, override)
    assert [(s, k) for s, k, _ in found] == [("shards", key)]
    assert re.search(words, found[0][2])


def test_cluster_level_keys(tmp_path):
    found = problems(tmp_path, "cluster.partition=nope", "cluster.python=/no/such/python", "cluster.setup=['if then']")
    keys = {k for _, k, _ in found}
    assert {"cluster.python", "cluster.setup"} <= keys
    assert sum(k == "cluster.partition" for _, k, _ in found) == 4  # every stage uses the default partition


def test_unwritable_run_root(tmp_path):
    f = tmp_path / "file"
    f.write_text("")
    assert ("run_root" in [k for _, k, _ in problems(f / "sub")])


def test_account_and_qos_checked_against_associations(tmp_path):
    assoc = lambda user: ({"proj-a"}, {"normal"})  # noqa: E731
    found = problems(tmp_path, "cluster.account=proj-b", "pipeline.stages.reduce.resources.qos=high", assoc=assoc)
    keys = {(s, k) for s, k, _ in found}
    assert ("reduce", "pipeline.stages.reduce.resources.qos") in keys
    assert ("shards", "cluster.account") in keys
    assert problems(tmp_path, "cluster.account=proj-a", assoc=assoc) == []
