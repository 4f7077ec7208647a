"""QOS and association limits (launcher/slurm/limits.py): read from sacctmgr's parsable output (sample
of Slurm 22.05, with a site banner), and a stage over one of them refused before submission with the
limit and its source named (such a job is not refused by sbatch: it pends forever)."""
import pytest

from launcher.compose import compose
from launcher.plan import build_plan
from launcher.preflight import preflight
from launcher.slurm.facts import parse_cluster_info
from launcher.slurm.limits import applicable, job_tres, parse_limits, parse_tres

QOS = ("Welcome to the cluster! Quota: 12 GPU-h left\n"
       "normal|||||\n"
       "small|cpu=2,gres/gpu=1|||00:30:00|\n"
       "peruser||gres/gpu=2,mem=4G|||10\n"
       "group|||node=1|1-00:00:00|\n")
ASSOC = ("root||normal||||\n"
         "lab|gpu|small|node=1||02:00:00|\n"
         "lab||normal||||6\n")
CONFIG = "MaxArraySize = 1001\n"
PARTITIONS = ("PartitionName=debug Default=YES MaxTime=UNLIMITED Nodes=n[1-3] State=UP\n"
              "PartitionName=gpu Default=NO MaxTime=UNLIMITED Nodes=n[1-3] State=UP\n")
NODES = "".join(f"NodeName=n{i} CPUTot=16 RealMemory=64000 Gres=gpu:4 Partitions=debug,gpu State=IDLE\n" for i in (1, 2, 3))
S = "pipeline.stages.shards.resources"


def test_tres_and_limits_are_read_as_sacctmgr_prints_them():
    assert parse_tres("cpu=64,gres/gpu=8,mem=100G,node=2,billing=x") == {"cpu": 64, "gres/gpu": 8, "mem": 102400,
                                                                        "node": 2}
    lim = parse_limits(QOS, ASSOC)
    assert set(lim.qos) == {"normal", "small", "peruser", "group"}  # the banner is not a QOS
    assert lim.qos["small"].max_tres == {"cpu": 2, "gres/gpu": 1} and lim.qos["small"].max_wall_min == 30
    assert lim.qos["peruser"].max_tres_per_user == {"gres/gpu": 2, "mem": 4096} and lim.qos["peruser"].max_submit == 10
    assert lim.qos["group"].grp_tres == {"node": 1} and lim.qos["group"].max_wall_min == 1440
    assert lim.associations[("lab", "gpu")][1] == "small" and lim.associations[("lab", "")][0].max_submit == 6


def test_the_partition_association_and_the_default_qos_apply():
    lim = parse_limits(QOS, ASSOC)
    assert [x.source for x in applicable(lim, "lab", "gpu", None)] == ["association lab/gpu", "QOS 'small'"]
    assert [x.source for x in applicable(lim, "lab", "debug", "peruser")] == ["association lab", "QOS 'peruser'"]
    # No account given: the user's default account is not known here, so only a single one is taken.
    assert [x.source for x in applicable(lim, None, "debug", None)] == []
    only_root = parse_limits(QOS, "root||normal||||\n")
    assert [x.source for x in applicable(only_root, None, "debug", None)] == ["association root", "QOS 'normal'"]


def problems(tmp_path, *overrides):
    plan = build_plan([compose(["pipeline=smoke", "cluster=dev", *overrides])], [[]])
    info = parse_cluster_info(CONFIG, PARTITIONS, NODES)
    return [(e.stage, e.key, e.message) for e in preflight(plan, tmp_path, info, limits=lambda user: parse_limits(QOS, ASSOC))
            if "interpreter" not in e.message]


@pytest.mark.parametrize("overrides,key,words", [
    ([f"{S}.qos=small", f"{S}.cpus_per_task=4"], f"{S}.cpus_per_task", "cpu=4, over QOS 'small' MaxTRES (per job) cpu=2"),
    ([f"{S}.qos=small", f"{S}.gpus_per_node=2"], f"{S}.gpus_per_node", "gres/gpu=2, over QOS 'small'"),
    ([f"{S}.qos=small", f"{S}.time=01:00:00"], f"{S}.time", "60 min is over QOS 'small' MaxWall (30 min)"),
    ([f"{S}.qos=peruser", f"{S}.mem_gb=8"], f"{S}.mem_gb", "MaxTRESPerUser mem=4096 MB"),
    ([f"{S}.qos=group", f"{S}.nodes=2"], f"{S}.nodes", "node=2, over QOS 'group' GrpTRES node=1"),
    ([f"{S}.qos=group", f"{S}.time=UNLIMITED"], f"{S}.time", "no time limit is over QOS 'group' MaxWall"),
    ([f"{S}.account=lab", f"{S}.partition=gpu", f"{S}.nodes=2"], f"{S}.nodes", "association lab/gpu MaxTRES"),
    (["cluster.account=lab", "pipeline.stages.shards.tasks=5"], "pipeline.stages.shards.tasks", "queues 9 array tasks, over association lab MaxSubmitJobs (6"),
])
def test_a_request_over_a_limit_is_refused_with_the_limit_named(tmp_path, overrides, key, words):
    found = problems(tmp_path, *overrides)
    assert any(k == key and words in m for _, k, m in found), found


def test_requests_within_the_limits_pass(tmp_path):
    assert problems(tmp_path, f"{S}.qos=small", f"{S}.cpus_per_task=2", f"{S}.gpus_per_node=1") == []
    assert problems(tmp_path, "cluster.account=root", f"{S}.nodes=3") == []  # root has no limits


def test_one_task_asks_for_its_nodes_times_the_per_node_request():
    r = {"nodes": 2, "ntasks_per_node": 4, "cpus_per_task": 2, "gpus_per_node": 4, "gpu_type": "a100", "mem_gb": 1.5}
    assert job_tres(r) == {"cpu": 16, "node": 2, "mem": 3072, "gres/gpu": 8, "gres/gpu:a100": 8}
