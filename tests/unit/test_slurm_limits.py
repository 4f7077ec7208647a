"""QOS and association limits (launcher/slurm/limits.py): read from sacctmgr's parsable output (sample
of Slurm 22.05, with a site banner), and a stage over one of them refused before submission with the
limit and its source named (such a job is not refused by sbatch: it pends forever). The partition's own
QOS holds over the job's (unless that one has OverPartQOS), and both over the association; a job
without --account is held to the user's DefaultAccount; submit limits count every array task, with the
user's jobs already queued; running-job limits only warn."""
import pytest

from launcher.config.compose import compose
from launcher.plan.model import build_plan
from launcher.plan.preflight import preflight
from launcher.slurm.facts import parse_cluster_info
from launcher.slurm.limits import (QueuedJob, applicable, counts_toward, job_tres, parse_limits, parse_queued,
                                   parse_tres)

# sacctmgr -n -P show qos format=Name,Flags,MaxTRES,MaxTRESPU,GrpTRES,MaxWall,MaxSubmitPU,GrpSubmit,MaxJobsPU,GrpJobs
QOS = ("Welcome to the cluster! Quota: 12 GPU-h left\n"
       "normal|||||||||\n"
       "small||cpu=2,gres/gpu=1|||00:30:00||||\n"
       "peruser|||gres/gpu=2,mem=4G|||10|||\n"
       "group||||node=1|1-00:00:00||||\n"
       "part_gpu||gres/gpu=4|||||||\n"
       "over|DenyOnLimit,OverPartQOS|gres/gpu=8|||||||\n"
       "jobs||||||||2|3\n"
       "submit||||||40|||\n")
# sacctmgr -n -P show user root withassoc format=Cluster,DefaultAccount,Account,Partition,DefaultQOS,MaxTRES,
# GrpTRES,MaxWall,MaxSubmit,GrpSubmit,MaxJobs,GrpJobs (the database serves a second cluster, labmn)
ASSOC = ("lab|lab|root||normal|||||||\n"
         "lab|lab|lab|gpu|small|node=1||02:00:00||||\n"
         "lab|lab|lab||normal||||8|||\n"
         "labmn|lab|lab||normal|cpu=1||||||\n")
CONFIG = "MaxArraySize = 1001\nClusterName = lab\n"
PARTITIONS = ("PartitionName=debug AllowGroups=ALL Default=YES QoS=N/A MaxTime=UNLIMITED Nodes=n[1-3] State=UP\n"
              "PartitionName=gpu AllowGroups=ALL Default=NO QoS=part_gpu MaxTime=UNLIMITED Nodes=n[1-3] State=UP\n")
NODES = "".join(f"NodeName=n{i} CPUTot=16 RealMemory=64000 Gres=gpu:4 Partitions=debug,gpu State=IDLE\n" for i in (1, 2, 3))
S = "pipeline.stages.shards.resources"


def test_tres_and_limits_are_read_as_sacctmgr_prints_them():
    assert parse_tres("cpu=64,gres/gpu=8,mem=100G,node=2,billing=x") == {"cpu": 64, "gres/gpu": 8, "mem": 102400,
                                                                        "node": 2}
    lim = parse_limits(QOS, ASSOC, cluster="lab")
    assert set(lim.qos) == {"normal", "small", "peruser", "group", "part_gpu", "over", "jobs", "submit"}  # no banner
    assert lim.qos["small"].max_tres == {"cpu": 2, "gres/gpu": 1} and lim.qos["small"].max_wall_min == 30
    assert lim.qos["peruser"].max_tres_per_user == {"gres/gpu": 2, "mem": 4096} and lim.qos["peruser"].max_submit == 10
    assert lim.qos["group"].grp_tres == {"node": 1} and lim.qos["group"].max_wall_min == 1440
    assert lim.qos["over"].flags == ("DenyOnLimit", "OverPartQOS")
    assert (lim.qos["jobs"].max_jobs, lim.qos["jobs"].grp_jobs, lim.qos["submit"].max_submit) == (2, 3, 40)
    assert lim.associations[("lab", "gpu")][1] == "small" and lim.associations[("lab", "")][0].max_submit == 8
    assert lim.associations[("lab", "")][0].max_tres == {}  # labmn's association is another cluster's
    assert lim.default_account == "lab"
    info = parse_cluster_info(CONFIG, PARTITIONS, NODES)
    assert (info.partitions["gpu"].qos, info.partitions["debug"].qos, info.cluster_name) == ("part_gpu", None, "lab")


def test_the_partition_association_and_the_default_qos_apply_highest_level_first():
    lim = parse_limits(QOS, ASSOC, cluster="lab")
    assert [x.source for x in applicable(lim, "lab", "gpu", None)] == ["QOS 'small'", "association lab/gpu"]
    assert [x.source for x in applicable(lim, "lab", "debug", "peruser")] == ["QOS 'peruser'", "association lab"]
    assert [x.source for x in applicable(lim, "root", "gpu", "small", "part_gpu")] == [
        "partition gpu's QOS 'part_gpu'", "QOS 'small'", "association root"]
    assert [x.source for x in applicable(lim, "root", "gpu", "over", "part_gpu")] == [
        "QOS 'over'", "partition gpu's QOS 'part_gpu'", "association root"]  # OverPartQOS
    assert [x.source for x in applicable(lim, "root", "gpu", "part_gpu", "part_gpu")] == [
        "partition gpu's QOS 'part_gpu'", "association root"]  # the same QOS once


def test_a_limit_set_higher_up_hides_the_same_limit_below_but_grp_limits_all_hold():
    lim = parse_limits(QOS, ASSOC, cluster="lab")
    part, job, _ = applicable(lim, "root", "gpu", "small", "part_gpu")
    assert part.max_tres == {"gres/gpu": 4} and job.max_tres == {"cpu": 2}  # small's gres/gpu=1 is hidden
    first, second, _ = applicable(lim, "root", "gpu", "over", "part_gpu")
    assert first.max_tres == {"gres/gpu": 8} and second.max_tres == {}
    both = parse_limits("a||||gres/gpu=2|01:00:00||5||\nb||||gres/gpu=1|02:00:00||3||\n", "")
    a, b = applicable(both, None, "p", "b", "a")
    assert (a.grp_tres, b.grp_tres, a.max_wall_min, b.max_wall_min) == ({"gres/gpu": 2}, {"gres/gpu": 1}, 60, None)
    assert (a.grp_submit, b.grp_submit) == (5, 3)


def test_without_an_account_the_default_account_holds():
    lim = parse_limits(QOS, ASSOC, cluster="lab")
    assert [x.source for x in applicable(lim, None, "debug", None)] == ["QOS 'normal'", "association lab"]
    assert [x.source for x in applicable(lim, None, "gpu", None)] == ["QOS 'small'", "association lab/gpu"]
    # No DefaultAccount known (an older capture): only a user with one account is unambiguous.
    no_default = parse_limits(QOS, "lab||root||normal|||||||\nlab||lab||normal||||6|||\n")
    assert no_default.default_account is None
    assert [x.source for x in applicable(no_default, None, "debug", None)] == []
    only_root = parse_limits(QOS, "lab||root||normal|||||||\n")
    assert [x.source for x in applicable(only_root, None, "debug", None)] == ["QOS 'normal'", "association root"]


def test_queued_jobs_are_read_from_squeue_and_counted_where_they_belong():
    jobs = parse_queued("Queue is busy\nlab|normal|debug\nlab|small|gpu\nroot|normal|debug,gpu\n\n")
    assert jobs == [QueuedJob("lab", "normal", "debug"), QueuedJob("lab", "small", "gpu"),
                    QueuedJob("root", "normal", "debug,gpu")]
    lim = parse_limits(QOS, ASSOC, cluster="lab")
    part, job, assoc = applicable(lim, "lab", "gpu", "small", "part_gpu")
    assert [counts_toward(part, j) for j in jobs] == [False, True, True]
    assert [counts_toward(job, j) for j in jobs] == [False, True, False]
    assert [counts_toward(assoc, j) for j in jobs] == [False, True, False]
    assert [counts_toward(applicable(lim, "lab", "debug", None)[1], j) for j in jobs] == [True, True, False]


def problems(tmp_path, *overrides, queued=None, warnings=None, assoc=ASSOC):
    plan = build_plan([compose(["pipeline=smoke", "cluster=dev", *overrides])], [[]])
    info = parse_cluster_info(CONFIG, PARTITIONS, NODES)
    return [(e.stage, e.key, e.message) for e in preflight(plan, tmp_path, info,
                                                           limits=lambda user: parse_limits(QOS, assoc, "lab"),
                                                           queued=queued, warnings=warnings)
            if "interpreter" not in e.message]


@pytest.mark.parametrize("overrides,key,words", [
    ([f"{S}.qos=small", f"{S}.cpus_per_task=4"], f"{S}.cpus_per_task", "cpu=4, over QOS 'small' MaxTRES (per job) cpu=2"),
    ([f"{S}.qos=small", f"{S}.gpus_per_node=2"], f"{S}.gpus_per_node", "gres/gpu=2, over QOS 'small'"),
    ([f"{S}.qos=small", f"{S}.time=01:00:00"], f"{S}.time", "60 min is over QOS 'small' MaxWall (30 min)"),
    ([f"{S}.qos=peruser", f"{S}.mem_gb=8"], f"{S}.mem_gb", "MaxTRESPerUser mem=4096 MB"),
    ([f"{S}.qos=group", f"{S}.nodes=2"], f"{S}.nodes", "node=2, over QOS 'group' GrpTRES node=1"),
    ([f"{S}.qos=group", f"{S}.time=UNLIMITED"], f"{S}.time", "no time limit is over QOS 'group' MaxWall"),
    ([f"{S}.account=lab", f"{S}.partition=gpu", f"{S}.nodes=2"], f"{S}.nodes", "association lab/gpu MaxTRES"),
    (["cluster.account=lab", "pipeline.stages.shards.tasks=5"], "pipeline.stages.shards.tasks",
     "would queue 9 array task(s) (each one counts as a job): 9 is over association lab MaxSubmitJobs=8"),
    # no account given: the user's DefaultAccount (lab) holds
    (["pipeline.stages.shards.tasks=5"], "pipeline.stages.shards.tasks", "over association lab MaxSubmitJobs=8"),
    ([f"{S}.account=root", f"{S}.partition=gpu", f"{S}.nodes=2", f"{S}.gpus_per_node=3"], f"{S}.gpus_per_node",
     "gres/gpu=6, over partition gpu's QOS 'part_gpu' MaxTRES (per job) gres/gpu=4"),
])
def test_a_request_over_a_limit_is_refused_with_the_limit_named(tmp_path, overrides, key, words):
    found = problems(tmp_path, *overrides)
    assert any(k == key and words in m for _, k, m in found), found


def test_requests_within_the_limits_pass(tmp_path):
    assert problems(tmp_path, f"{S}.qos=small", f"{S}.cpus_per_task=2", f"{S}.gpus_per_node=1") == []
    assert problems(tmp_path, "cluster.account=root", f"{S}.nodes=3") == []  # root has no limits


def test_the_partition_qos_wins_over_the_job_qos_unless_that_one_has_over_part_qos(tmp_path):
    gpu = ["cluster.account=root", f"{S}.partition=gpu"]
    # small allows 1 GPU, but in partition gpu its QOS part_gpu sets the GPU limit: 4
    assert problems(tmp_path, *gpu, f"{S}.qos=small", f"{S}.gpus_per_node=2") == []
    assert problems(tmp_path, "cluster.account=root", f"{S}.qos=small", f"{S}.gpus_per_node=2") != []  # debug
    # small's cpu=2 still holds in gpu: part_gpu sets no CPU limit
    assert any("cpu=4, over QOS 'small'" in m for _, _, m in problems(tmp_path, *gpu, f"{S}.qos=small",
                                                                       f"{S}.cpus_per_task=4"))
    # OverPartQOS: over's gres/gpu=8 holds, part_gpu's 4 does not
    assert problems(tmp_path, *gpu, f"{S}.qos=over", f"{S}.nodes=2", f"{S}.gpus_per_node=3") == []


def test_submit_limits_count_the_jobs_already_queued(tmp_path):
    asked = []

    def queued(user):
        asked.append(user)
        return [QueuedJob("root", "submit", "debug")] * 36 + [QueuedJob("root", "normal", "debug")] * 9

    submit = ["cluster.account=root", "cluster.qos=submit"]
    assert problems(tmp_path, *submit) == [] and asked == []  # not asked without a callable
    found = problems(tmp_path, *submit, queued=queued)
    assert len(asked) == 1, asked
    assert [(k, "would queue 8 array task(s) (each one counts as a job) and 36 job(s) of yours already queued "
                "count toward it: 44 is over QOS 'submit' MaxSubmitJobsPerUser=40" in m) for _, k, m in found] == [
        ("pipeline.stages.shards.tasks", True)], found
    # an array of 37 tasks is 37 jobs (41 in the run): refused without asking squeue
    asked.clear()
    found = problems(tmp_path, *submit, "pipeline.stages.shards.tasks=37", queued=queued)
    assert asked == [] and any("would queue 41 array task(s)" in m for _, _, m in found), found


def test_running_job_limits_only_warn_with_the_number(tmp_path):
    warnings = []
    found = problems(tmp_path, "cluster.account=root", f"{S}.qos=jobs", "pipeline.stages.shards.tasks=5",
                     warnings=warnings)
    assert found == [] and warnings == [
        "QOS 'jobs' MaxJobsPerUser=2: at most 2 job(s) run at once, so the tasks of shards (4 at once) beyond that wait "
        "(squeue reason QOSMaxJobsPerUserLimit); the run takes longer"], warnings
    warnings.clear()
    problems(tmp_path, "cluster.account=root", f"{S}.qos=jobs", "pipeline.stages.shards.tasks=5",
             "pipeline.stages.shards.throttle=2", warnings=warnings)
    assert warnings == [], warnings  # the throttle keeps it within


def test_one_task_asks_for_its_nodes_times_the_per_node_request():
    r = {"nodes": 2, "ntasks_per_node": 4, "cpus_per_task": 2, "gpus_per_node": 4, "gpu_type": "a100", "mem_gb": 1.5}
    assert job_tres(r) == {"cpu": 16, "node": 2, "mem": 3072, "gres/gpu": 8, "gres/gpu:a100": 8}
