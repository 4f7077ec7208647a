"""Site options on the real dev cluster (issue 18 item 1): a typed GPU request, a reservation, memory
per CPU, a node list and a pass-through option reach Slurm as asked and the job runs; what preflight
checks of them (GRES types, reservations, node names) is read from the live cluster; SBATCH_*
variables of the submitting shell do not change what runs. (Values and their errors one by one:
tests/unit/test_sbatch_options.py; refused configs: tests/bad_configs/site_*.)"""
import json
import os
import subprocess
import time

import pytest
from conftest import job_of

pytestmark = pytest.mark.slurm

S = "pipeline.stages.shards.resources"
SMOKE = ["pipeline=smoke", "cluster=dev"]


def slurm(env: dict, *argv: str) -> str:
    return subprocess.run(list(argv), env={**os.environ, **env}, capture_output=True, text=True, check=True).stdout


def node_name(env: dict) -> str:
    return slurm(env, "sinfo", "-h", "-N", "-o", "%N").split()[0]


def drop_reservation(env: dict, name: str) -> None:
    """Cancel the jobs that use the reservation (Slurm refuses to delete it while they are queued), then
    delete it; nothing when there is none."""
    jobs = subprocess.run(["squeue", "-h", f"--reservation={name}", "-o", "%A"], env={**os.environ, **env},
                          capture_output=True, text=True).stdout.split()
    if jobs:
        subprocess.run(["scancel", *sorted(set(jobs))], env={**os.environ, **env}, capture_output=True)
        time.sleep(2)
    subprocess.run(["scontrol", "delete", f"ReservationName={name}"], env={**os.environ, **env}, capture_output=True)


@pytest.fixture
def reservation(dev_slurm):
    """A reservation on the dev node for root (the tests' user), removed afterwards with its jobs."""
    name = "launcher-test-resv"
    drop_reservation(dev_slurm, name)
    slurm(dev_slurm, "scontrol", "create", "reservation", f"ReservationName={name}", "StartTime=now",
          "Duration=60", "Users=root", f"Nodes={node_name(dev_slurm)}", "Flags=IGNORE_JOBS")
    yield name
    drop_reservation(dev_slurm, name)


def job_record(env: dict, job: str) -> dict:
    """`scontrol -o show job <id>` of the first task, as a dict."""
    line = slurm(env, "scontrol", "-o", "show", "job", job).splitlines()[0]
    return dict(tok.split("=", 1) for tok in line.split() if "=" in tok)


def test_typed_gpus_memory_per_cpu_and_a_node_list_reach_slurm_and_the_job_runs(dcli, dev_slurm):
    node = node_name(dev_slurm)
    dcli("run", *SMOKE, f"{S}.partition=gpu", f"{S}.gpus_per_node=devgpu:1", f"{S}.mem_per_cpu_gb=0.5",
         f"{S}.nodelist={node}", f"+{S}.sbatch.nice=10", "cluster.resources.comment=site-options-test")
    st = dcli.wait(timeout=180)
    assert st["state"] == "COMPLETED", st
    rec = job_record(dev_slurm, job_of(dcli, "shards"))
    assert rec["Partition"] == "gpu" and rec["Nice"] == "10" and rec["ReqNodeList"] == node, rec
    assert "gpu:devgpu:1" in rec.get("TresPerNode", "") + rec.get("TRES", ""), rec
    assert rec["MinMemoryCPU"] == "512M" and rec["Comment"] == "site-options-test", rec
    # The profile default reached the stages that do not set it (reduce: the comment).
    assert job_record(dev_slurm, job_of(dcli, "reduce"))["Comment"] == "site-options-test"


def test_a_reservation_for_every_stage_reaches_slurm_and_the_run_completes(dcli, dev_slurm, reservation):
    """The reservation holds the only node, so every stage uses it (the profile's default), else the
    others would pend until it ends; a GPU stage runs in it too."""
    dcli("run", *SMOKE, f"cluster.resources.reservation={reservation}", f"{S}.gpus_per_node=devgpu:1")
    assert dcli.wait(timeout=180)["state"] == "COMPLETED"
    assert {job_record(dev_slurm, job_of(dcli, s))["Reservation"] for s in ("shards", "reduce")} == {reservation}


def test_preflight_reads_gres_types_reservations_and_nodes_from_the_live_cluster(dcli, dev_slurm, reservation):
    p = dcli("run", *SMOKE, f"{S}.partition=gpu", f"{S}.gpus_per_node=a100:1", f"{S}.exclude=ghost",
             f"{S}.reservation={reservation}-typo", check=False)
    assert p.returncode == 1, p.stderr
    for words in ("of type 'a100'", "its gpu types: devgpu", "no node named ghost",
                  f"no reservation '{reservation}-typo' (reservations: {reservation}"):
        assert words in p.stderr, (words, p.stderr)
    assert not list(dcli.run_root.glob("*/run.json"))


def test_sbatch_variables_of_the_shell_do_not_change_what_runs(dcli, dev_slurm):
    """SBATCH_PARTITION would send the job to another partition than the one preflight checked (the
    issue's measurement: a clean plan became 'Requested time limit is invalid')."""
    dcli.env.update(SBATCH_PARTITION="gpu", SBATCH_TIMELIMIT="1")
    p = dcli("run", *SMOKE, f"{S}.partition=debug")
    assert "SBATCH_PARTITION, SBATCH_TIMELIMIT" in p.stderr and "warning" in p.stderr
    assert dcli.wait(timeout=180)["state"] == "COMPLETED"
    rec = job_record(dev_slurm, job_of(dcli, "shards"))
    assert rec["Partition"] == "debug" and rec["TimeLimit"] != "00:01:00", rec
    submissions = json.dumps(dcli.ledger())
    assert "SBATCH_" not in submissions


@pytest.fixture
def tiny_qos(dev_slurm):
    """A QOS with a per-job CPU limit and a MaxWall, made available to root; removed afterwards."""
    env = {**os.environ, **dev_slurm}

    def sacctmgr(*args):
        return subprocess.run(["sacctmgr", "-i", *args], env=env, capture_output=True, text=True)

    sacctmgr("add", "qos", "launcher-tiny", "MaxTRESPerJob=cpu=1", "MaxWall=00:10:00")
    sacctmgr("modify", "user", "root", "set", "qos+=launcher-tiny")
    yield "launcher-tiny"
    sacctmgr("modify", "user", "root", "set", "qos-=launcher-tiny")
    sacctmgr("delete", "qos", "launcher-tiny")


def test_a_request_over_a_qos_limit_is_refused_before_it_could_pend_forever(dcli, dev_slurm, tiny_qos):
    """sbatch takes such a job and it pends with QOSMaxCpuPerJobLimit / QOSMaxWallDurationPerJobLimit."""
    p = dcli("run", *SMOKE, f"{S}.qos={tiny_qos}", f"{S}.cpus_per_task=2", f"{S}.time=00:20:00", check=False)
    assert p.returncode == 1, p.stderr
    assert f"cpu=2, over QOS '{tiny_qos}' MaxTRES (per job) cpu=1" in p.stderr, p.stderr
    assert f"20 min is over QOS '{tiny_qos}' MaxWall (10 min)" in p.stderr, p.stderr
    dcli("run", *SMOKE, f"{S}.qos={tiny_qos}")  # within the limits: queued
    assert dcli.wait(timeout=180)["state"] == "COMPLETED"


@pytest.fixture
def submit_limits(dev_slurm):
    """A QOS that admits 5 queued jobs per user, and root's association under its DefaultAccount (root)
    with MaxSubmitJobs=6, root also being in a second account (so only the DefaultAccount says which
    association a job without --account is charged to); all removed afterwards."""
    env = {**os.environ, **dev_slurm}

    def sacctmgr(*args):
        return subprocess.run(["sacctmgr", "-i", *args], env=env, capture_output=True, text=True)

    sacctmgr("add", "qos", "launcher-submit", "MaxSubmitJobsPerUser=5")
    sacctmgr("modify", "user", "root", "set", "qos+=launcher-submit")
    sacctmgr("add", "account", "launcher-other")
    sacctmgr("add", "user", "root", "account=launcher-other")
    p = sacctmgr("modify", "user", "root", "where", "account=root", "set", "MaxSubmitJobs=6")
    assert p.returncode == 0, p.stderr
    yield "launcher-submit"
    sacctmgr("modify", "user", "root", "where", "account=root", "set", "MaxSubmitJobs=-1")
    sacctmgr("delete", "user", "root", "where", "account=launcher-other")
    sacctmgr("delete", "account", "launcher-other")
    sacctmgr("modify", "user", "root", "set", "qos-=launcher-submit")
    sacctmgr("delete", "qos", "launcher-submit")


def test_submit_limits_of_the_qos_and_of_the_default_accounts_association_are_refused(dcli, submit_limits):
    """The smoke pipeline queues 8 array tasks, each a job to Slurm's submit limits: over the QOS's
    MaxSubmitJobsPerUser=5 with cluster.qos set, and over the association's MaxSubmitJobs=6 without any
    account given (Slurm charges the user's DefaultAccount, root here): refused before sbatch, naming the
    limit and where it comes from. Slurm would refuse such a submission halfway (QOSMaxSubmitJobPerUserLimit),
    leaving the first stages queued."""
    p = dcli("plan", *SMOKE, f"cluster.qos={submit_limits}", check=False)
    assert p.returncode == 1 and f"over QOS '{submit_limits}' MaxSubmitJobsPerUser=5" in p.stderr, p.stderr
    p = dcli("plan", *SMOKE, check=False)
    assert p.returncode == 1 and "association root" in p.stderr and "MaxSubmitJobs=6" in p.stderr, p.stderr
    dcli("plan", *SMOKE, "~pipeline.stages.shards", "~pipeline.stages.fanout",
         "~pipeline.stages.reduce.after.shards")  # 2 jobs: within both


@pytest.fixture
def partition_qos(dev_slurm):
    """Partition gpu gets its own QOS (a per-job CPU limit, one running job per user), whatever the job's
    QOS; the partition's QOS is restored to none afterwards (`QOS=` empty removes it)."""
    env = {**os.environ, **dev_slurm}

    def run(*argv):
        return subprocess.run(list(argv), env=env, capture_output=True, text=True)

    run("sacctmgr", "-i", "add", "qos", "launcher-part", "MaxTRESPerJob=cpu=1", "MaxJobsPerUser=1")
    p = run("scontrol", "update", "PartitionName=gpu", "QOS=launcher-part")
    assert p.returncode == 0, p.stderr
    yield "launcher-part"
    run("scontrol", "update", "PartitionName=gpu", "QOS=")
    if "QoS=launcher-part" in run("scontrol", "-o", "show", "partition", "gpu").stdout:
        run("scontrol", "reconfigure")  # slurm.conf's partitions again, as `up` made them
    run("sacctmgr", "-i", "delete", "qos", "launcher-part")


def test_the_partition_qos_is_checked_over_the_job_qos(dcli, dev_slurm, partition_qos):
    """A job in partition gpu is held to the partition's QOS (Slurm's hierarchy: partition QOS first):
    over its MaxTRESPerJob Slurm lets it pend (QOSMax...) where limits are enforced, so preflight refuses it naming the partition
    and the QOS; its MaxJobsPerUser only delays a run (a warning with the number); the same request in
    partition debug, which has no QOS, passes."""
    # (The dev cluster does not enforce QOS limits (no AccountingStorageEnforce), so a raw sbatch over
    # the limit runs there instead of pending on QOSMax…: what is checked here is the launcher's refusal.)
    p = dcli("plan", *SMOKE, f"{S}.partition=gpu", f"{S}.cpus_per_task=2", check=False)
    assert p.returncode == 1, p.stderr
    assert (f"cpu=2, over partition gpu's QOS '{partition_qos}' MaxTRES (per job) cpu=1" in p.stderr), p.stderr
    dcli("plan", *SMOKE, f"{S}.cpus_per_task=2")  # partition debug: no partition QOS
    p = dcli("run", *SMOKE, f"{S}.partition=gpu")
    assert (f"warning: partition gpu's QOS '{partition_qos}' MaxJobsPerUser=1: at most 1 job(s) run at once, so the "
            f"tasks of shards (4 at once) beyond that wait" in p.stderr), p.stderr
    assert dcli.wait(timeout=180)["state"] == "COMPLETED"
