"""The sbatch options beyond the core resources (launcher/sbatch/options.py): typed per stage and as
profile defaults (cluster.resources), the checked pass-through map `resources.sbatch`, how they render
(through submitit's own parameters), and what preflight checks of them against the cluster's nodes,
GRES types, reservations and partitions (sample `scontrol -o` output of Slurm 22.05)."""
import os
from pathlib import Path

import pytest

from launcher.sbatch import options as sbatch_options
from launcher.config.compose import PROJECT_ROOT, compose
from launcher.errors import ConfigErrors
from launcher.plan.model import build_plan
from launcher.plan.preflight import preflight
from launcher.plan.render import build_requests, render_script
from launcher.slurm.client import Slurm
from launcher.slurm.facts import parse_cluster_info, parse_reservations

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
CONFIG = "MaxArraySize = 1001\n"
PARTITIONS = (
    "PartitionName=debug Default=YES MaxNodes=UNLIMITED MaxTime=04:00:00 Nodes=n[1-3] State=UP\n"
    "PartitionName=gpu Default=NO MaxNodes=UNLIMITED MaxTime=1-00:00:00 Nodes=g[1-2] State=UP\n"
    "PartitionName=long Default=NO MaxNodes=UNLIMITED MaxTime=UNLIMITED Nodes=n3 State=UP\n")
NODES = "".join(
    f"NodeName={n} CPUTot=16 RealMemory=64000 Gres={g} Partitions={p} State=IDLE\n"
    for n, g, p in (("n1", "(null)", "debug"), ("n2", "(null)", "debug"), ("n3", "(null)", "debug,long"),
                    ("g1", "gpu:a100:4(S:0-1)", "gpu"), ("g2", "gpu:h100:8,shard:16", "gpu")))
RESERVATIONS = (
    "ReservationName=maint StartTime=2026-12-01T00:00:00 EndTime=2026-12-02T00:00:00 Nodes=n[1-2] "
    "NodeCnt=2 PartitionName=(null) Flags=MAINT Users=root Accounts=(null) State=ACTIVE\n"
    "ReservationName=team StartTime=2026-12-01T00:00:00 EndTime=2026-12-02T00:00:00 Nodes=g2 NodeCnt=1 "
    "PartitionName=gpu Flags=(null) Users=(null) Accounts=proj State=ACTIVE TRES=cpu=16,gres/gpu=8\n"
    "ReservationName=cpuonly StartTime=2026-12-01T00:00:00 EndTime=2026-12-02T00:00:00 Nodes=g1 NodeCnt=1 "
    "PartitionName=(null) Flags=IGNORE_JOBS,SPEC_NODES Users=alice Accounts=(null) State=ACTIVE TRES=cpu=16\n")


def plan_of(*overrides, python="/env/bin/python"):
    """The smoke pipeline on the dev profile (`python`: the compute nodes' interpreter, None: this one)."""
    fixed = [f"cluster.python={python}"] if python else []
    return build_plan([compose(["pipeline=smoke", "cluster=dev", *fixed, *overrides])], [[]])


def config_errors(*overrides):
    with pytest.raises(ConfigErrors) as e:
        plan_of(*overrides)
    return [(err.stage, err.key, err.message) for err in e.value.errors]


def found(tmp_path, *overrides, user="root"):
    """(stage, key, message) of every preflight problem on the sample cluster, as `user`."""
    info = parse_cluster_info(CONFIG, PARTITIONS, NODES)
    import getpass
    real = getpass.getuser
    getpass.getuser = lambda: user
    try:
        return [(e.stage, e.key, e.message) for e in preflight(
            plan_of(*overrides, python=None), tmp_path, info, reservations=lambda: parse_reservations(RESERVATIONS))]
    finally:
        getpass.getuser = real


S = "pipeline.stages.shards.resources"

# Every new option on one stage, and the site's defaults from the profile (mail on every stage).
SITE = [f"{S}.gpus_per_node=h100:2", f"{S}.partition=gpu", f"{S}.mem_per_gpu_gb=20", f"{S}.reservation=team",
        f"{S}.cpus_per_gpu=4", f"{S}.exclude=g1", f"{S}.licenses=scratch:2", f"{S}.comment=ablation 7",
        f"{S}.begin=now+1hour", f"{S}.deadline=2026-12-24T18:00", f"{S}.hint=nomultithread",
        f"{S}.network=sn_single", f"+{S}.sbatch.gpu-bind=closest", f"+{S}.sbatch.overcommit=true",
        "cluster.resources.mail_type='END,FAIL'", "cluster.resources.mail_user=ops@example.org",
        "cluster.account=proj"]


def render(stage, *overrides):
    plan = plan_of(*overrides)
    req = next(r for r in build_requests(plan, {s: range(p.total_tasks) for s, p in plan.stages.items()}, 1001)
               if r.stage == stage)
    return render_script(plan, req, Path("/shared/runs/RUN"), "RUN").replace(str(PROJECT_ROOT), "<project>")


# The typed fields SITE leaves out, because each excludes one there: gres (instead of gpus_per_node, or
# Slurm adds both GPU requests), gpus_per_task, mem_per_cpu_gb (instead of mem_per_gpu_gb) and nodelist.
SITE_GRES = [f"{S}.partition=gpu", f"{S}.nodelist=g2", f"{S}.gres='shard:4'", f"{S}.gpus_per_task=2",
             f"{S}.mem_per_cpu_gb=2", f"{S}.cpus_per_task=2"]


@pytest.mark.parametrize("overrides,name", [(SITE, "site_options"), (SITE_GRES, "site_options_gres")])
def test_golden_site_options(overrides, name):
    text = render("shards", *overrides)
    golden = GOLDEN / f"{name}.sbatch"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()


def test_profile_defaults_reach_every_stage_and_a_stage_overrides_them():
    text = render("reduce", *SITE, "cluster.resources.mem_per_cpu_gb=2",
                  "pipeline.stages.reduce.resources.mail_type=NONE")
    assert "#SBATCH --mail-type=NONE\n" in text and "#SBATCH --mail-user=ops@example.org\n" in text
    assert "#SBATCH --mem-per-cpu=2GB\n" in text
    # A stage's own memory field wins over the profile's other one (they exclude each other).
    text = render("reduce", "cluster.resources.mem_per_cpu_gb=2", "pipeline.stages.reduce.resources.mem_gb=3")
    assert "#SBATCH --mem=3GB\n" in text and "mem-per-cpu" not in text


def test_zero_memory_is_all_of_it_and_unlimited_time_is_rendered_as_the_word():
    text = render("reduce", "pipeline.stages.reduce.resources.mem_gb=0", "pipeline.stages.reduce.resources.time=UNLIMITED")
    assert "#SBATCH --mem=0\n" in text and "#SBATCH --time=UNLIMITED\n" in text


def test_plans_made_before_the_new_options_keep_their_hashes():
    """The hash covers a new option only when it is given: runs planned earlier still resume."""
    plain = plan_of().stages["shards"].hash
    assert plan_of(f"{S}.reservation=maint").stages["shards"].hash != plain
    assert plan_of("cluster.resources.reservation=null").stages["shards"].hash == plain


@pytest.mark.parametrize("override,key,words", [
    (f"{S}.gpus_per_node=a100:x", f"{S}.gpus_per_node", "type:count"),
    (f"{S}.gpus_per_node=a100:0", f"{S}.gpus_per_node", "0 GPUs of a type"),
    (f"{S}.gres=gpu::2", f"{S}.gres", "name[:type][:count]"),
    (f"{S}.mem_per_cpu_gb=0.0001", f"{S}.mem_per_cpu_gb", "--mem=0MB"),
    (f"{S}.mem_per_gpu_gb=8", f"{S}.mem_per_gpu_gb", "asks for no GPU"),
    (f"{S}.cpus_per_gpu=2", f"{S}.cpus_per_gpu", "asks for no GPU"),
    (f"{S}.mail_type=SOMETIMES", f"{S}.mail_type", "unknown mail type SOMETIMES"),
    (f"{S}.hint=fast", f"{S}.hint", "unknown hint"),
    (f"{S}.begin=next-week", f"{S}.begin", "not a Slurm time"),
    (f"{S}.nodelist='n1 n2'", f"{S}.nodelist", "hostlist"),
    (f"{S}.licenses='a b'", f"{S}.licenses", "name[:count]"),
    (f"{S}.gpus_per_task=0", f"{S}.gpus_per_task", ">= 1"),
    (f"{S}.cpus_per_gpu=0", f"{S}.cpus_per_gpu", ">= 1"),
    (f"{S}.mail_user='ops@'", f"{S}.mail_user", "not a user name or address"),
    (f"{S}.mail_user='a b'", f"{S}.mail_user", "not a user name or address"),
    (f"{S}.mail_user='ops@@example.org'", f"{S}.mail_user", "not a user name or address"),
    (f"{S}.deadline=next-friday", f"{S}.deadline", "not a Slurm time"),
    (f"{S}.network='sn single'", f"{S}.network", "without spaces"),
    (f"{S}.network=''", f"{S}.network", "without spaces"),
    (f"+{S}.sbatch.gpus-per-nod=2", f"{S}.sbatch.gpus-per-nod", "did you mean 'gpus-per-node'"),
    (f"+{S}.sbatch.array=0-3", f"{S}.sbatch.array", "the launcher's own"),
    (f"+{S}.sbatch.partition=gpu", f"{S}.sbatch.partition", "use resources.partition"),
    (f"+{S}.sbatch.gpu-bind=null", f"{S}.sbatch.gpu-bind", "needs a value"),
    ("cluster.resources.hint=fast", "cluster.resources.hint", "unknown hint"),
    ("+cluster.resources.sbatch.dependency=afterok:1", "cluster.resources.sbatch.dependency", "the launcher's own"),
])
def test_bad_option_values_name_their_key(override, key, words):
    errors = config_errors(override)
    assert any(k == key and words in m for _, k, m in errors), errors


@pytest.mark.parametrize("user", ["alice", "ops@example.org", "first.last+ci@mail.example.org", "alice,ops@example.org"])
def test_mail_user_takes_a_user_name_or_an_address(user):
    r, _ = sbatch_options.resolve({"gpus_per_node": 0, "mail_user": user}, {})
    assert sbatch_options.resource_problems({**r, "mem_gb": None}) == []


def test_memory_fields_exclude_each_other():
    errors = config_errors(f"{S}.mem_gb=4", f"{S}.mem_per_cpu_gb=1")
    assert any("mutually exclusive" in m for _, _, m in errors), errors


def test_a_control_character_never_reaches_an_sbatch_line():
    """From a YAML file a value may hold a newline, which would end the #SBATCH line and start another."""
    r, _ = sbatch_options.resolve({"gpus_per_node": 0, "comment": "a\n#SBATCH --partition=x",
                                   "sbatch": {"gpu-bind": "x\ny"}}, {})
    keys = [k for k, _ in sbatch_options.resource_problems({**r, "mem_gb": None})]
    assert keys == ["comment", "sbatch.gpu-bind"]


@pytest.mark.parametrize("text,items", [
    ("gpu", [("gpu", None, 1)]), ("gpu:2", [("gpu", None, 2)]), ("gpu:a100", [("gpu", "a100", 1)]),
    ("gpu:a100:8,shard:16", [("gpu", "a100", 8), ("shard", None, 16)]), ("bandwidth:lustre:4G", [("bandwidth", "lustre", 4 << 30)]),
])
def test_gres_is_read_as_sbatch_reads_it(text, items):
    assert sbatch_options.parse_gres(text) == items


def test_resolve_is_idempotent():
    r, problems = sbatch_options.resolve({"gpus_per_node": "a100:8", "sbatch": {"nice": 5}},
                                         {"mem_per_cpu_gb": 2, "sbatch": {"nice": 1, "gpu-bind": "closest"}})
    assert problems == [] and r["gpus_per_node"] == 8 and r["gpu_type"] == "a100"
    assert r["sbatch"] == {"nice": 5, "gpu-bind": "closest"} and r["mem_per_cpu_gb"] == 2
    assert sbatch_options.resolve(r, {"mem_per_cpu_gb": 2, "sbatch": {"nice": 1, "gpu-bind": "closest"}}) == (r, [])


# --- preflight against the sample cluster --------------------------------------------------------------

@pytest.mark.parametrize("overrides", [SITE, SITE_GRES])
def test_site_options_pass_preflight(tmp_path, overrides):
    assert found(tmp_path, *overrides, user="alice") == []


@pytest.mark.parametrize("overrides,key,words", [
    # A typed GPU request: the type must exist on a node of the partition.
    ([f"{S}.partition=gpu", f"{S}.gpus_per_node=v100:1"], "gpus_per_node", "of type 'v100'"),
    ([f"{S}.partition=gpu", f"{S}.gres=gpu:a100:8"], "gres", "its gpu types: a100, h100"),
    ([f"{S}.partition=gpu", f"{S}.gres=fpga:1"], "gres", "1 x fpga"),
    # Nodes named must exist, belong to the partition, and leave enough nodes.
    ([f"{S}.nodelist=n9"], "nodelist", "no node named n9"),
    ([f"{S}.nodelist=g1"], "nodelist", "not in partition 'debug'"),
    ([f"{S}.nodelist='n[1-2]'"], "nodelist", "2 nodes listed"),
    ([f"{S}.exclude='n[1-3]'"], "exclude", "leaves 0 node(s)"),
    # Reservations: exists, is yours, holds nodes of the partition.
    ([f"{S}.reservation=nope"], "reservation", "no reservation 'nope' (reservations: cpuonly, maint, team"),
    ([f"{S}.reservation=maint"], "reservation", "is for users root"),
    ([f"{S}.reservation=team", "cluster.account=proj"], "reservation", "holds 0 node(s) of partition 'debug'"),
    # A partition list: one that can run it is enough; none, and each says why.
    ([f"{S}.partition='debug,nope'"], "partition", "'nope' does not exist"),
    ([f"{S}.partition='debug,long'", f"{S}.gpus_per_node=1"], "gpus_per_node", "no partition of 'debug,long'"),
    # No time limit only where MaxTime is none; memory per CPU adds up per node.
    ([f"{S}.time=UNLIMITED"], "time", "over partition 'debug' MaxTime"),
    ([f"{S}.mem_per_cpu_gb=40", f"{S}.cpus_per_task=2"], "mem_per_cpu_gb", "40.0 GB x 2 CPUs"),
])
def test_preflight_refuses_what_the_cluster_cannot_run(tmp_path, overrides, key, words):
    problems = found(tmp_path, *overrides, user="alice")
    assert any(k == f"{S}.{key}" and words in m for _, k, m in problems), problems


@pytest.mark.parametrize("overrides", [
    [f"{S}.partition='gpu,debug'", f"{S}.gpus_per_node=a100:4"],  # gpu fits, debug does not: fine
    [f"{S}.partition=long", f"{S}.time=infinite"],
    [f"{S}.mem_gb=0"],
    [f"{S}.partition=gpu", f"{S}.gres='gpu:h100:8,shard:4'"],
    [f"{S}.nodelist=n2", f"{S}.exclude=n1"],
    [f"{S}.reservation=cpuonly", f"{S}.partition=gpu", f"{S}.gpus_per_node=a100:1"],  # alice's, on g1
])
def test_preflight_accepts_what_the_cluster_can_run(tmp_path, overrides):
    assert found(tmp_path, *overrides, user="alice") == []


def test_the_reservation_is_asked_for_only_when_a_stage_names_one(tmp_path):
    calls = []
    info = parse_cluster_info(CONFIG, PARTITIONS, NODES)
    preflight(plan_of(python=None), tmp_path, info, reservations=lambda: calls.append(1) or {})
    assert calls == []
    preflight(plan_of(f"{S}.reservation=maint", python=None), tmp_path, info, reservations=lambda: calls.append(1) or {})
    assert calls == [1]


def test_sbatch_input_variables_are_not_passed_to_sbatch(monkeypatch):
    """SBATCH_PARTITION in the shell would override the checked --partition (sbatch(1) INPUT
    ENVIRONMENT VARIABLES): dropped like SLURM_*, and named for the warning."""
    monkeypatch.setenv("SBATCH_PARTITION", "debug")
    monkeypatch.setenv("SBATCH_TIMELIMIT", "5")
    monkeypatch.setenv("SLURM_CONF", "/etc/slurm/slurm.conf")
    slurm = Slurm({})
    assert slurm.dropped == ["SBATCH_PARTITION", "SBATCH_TIMELIMIT"]
    assert not any(k.startswith("SBATCH_") for k in slurm.env) and slurm.env["SLURM_CONF"]


def test_memory_per_gpu_counts_the_gpus_a_node_gets_through_gpus_per_task(tmp_path):
    """--mem-per-gpu x the node's GPUs (gpus_per_task x ntasks_per_node = 8 here): 80 GB, more than a
    node's 62.5 GB; counted as 0 GPUs (no memory asked) before node_gpus knew gpus_per_task."""
    got = found(tmp_path, f"{S}.partition=gpu", f"{S}.gpus_per_task=2", f"{S}.ntasks_per_node=4",
                f"{S}.mem_per_gpu_gb=10")
    assert [k for _, k, _ in got] == [f"{S}.mem_per_gpu_gb"], got
    assert "80.0 GB of memory (10.0 GB x 8 GPUs)" in got[0][2], got
