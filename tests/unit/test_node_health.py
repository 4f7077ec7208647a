"""The node health check's decision logic and its checks on this machine (jobs/runtime/health.py), its
settings and the exclusion of bad nodes on the login side (launcher/plan/health.py), and the task's
requeue for bad nodes as far as it runs without Slurm (jobs/task.py)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobs import layout
from jobs.runtime import health
from launcher.plan import health as login_health
from launcher.config.compose import compose
from launcher.errors import ConfigErrors
from launcher.plan.model import build_plan
from launcher.sbatch.options import node_gpus

pytestmark = pytest.mark.unit
HOSTS = ["n1", "n2", "n3"]


def ok(gbps=1.0):
    return {"problems": [], "collective": {"ok": True, "gbps": gbps}}


# -- decide ------------------------------------------------------------------------------------------
def test_all_healthy_passes():
    assert health.decide(HOSTS, {h: ok() for h in HOSTS}, 0.5) == {"bad": {}, "fault": None}


def test_a_node_with_problems_or_without_a_report_is_bad_and_the_collective_is_not_judged():
    reports = {"n1": ok(), "n2": {"problems": ["0.10 GB free"], "collective": {"ok": False, "error": "timeout"}}}
    d = health.decide(HOSTS, reports, 0.5)
    assert d["bad"] == {"n2": ["0.10 GB free"], "n3": [d["bad"]["n3"][0]]} and "no health report" in d["bad"]["n3"][0]
    assert d["fault"] is None  # n2's own failure explains the collective's


def test_a_slow_or_failed_collective_with_no_bad_node_is_a_fault_blaming_nobody():
    slow = health.decide(HOSTS, {"n1": ok(2.0), "n2": ok(0.2), "n3": ok(2.0)}, 0.5)
    assert slow["bad"] == {} and "0.200 GB/s, below health_check.min_allreduce_gbps=0.5" in slow["fault"]
    failed = health.decide(HOSTS, {**{h: ok() for h in HOSTS}, "n2": {"problems": [], "collective": {
        "ok": False, "error": "RuntimeError: connection reset"}}}, 0.5)
    assert failed["bad"] == {} and "connection reset" in failed["fault"]


def test_one_node_has_no_collective():
    assert health.decide(["n1"], {"n1": {"problems": [], "collective": None}}, 0.5) == {"bad": {}, "fault": None}


# -- the checks -------------------------------------------------------------------------------------
def test_gpu_count_and_ecc_from_nvidia_smi_output():
    csv = "0, 0\n1, 3\n2, [N/A]\n"
    assert health.gpu_problems(csv, 3) == ["GPU 1: 3 uncorrected ECC error(s)"]
    assert health.gpu_problems(csv, 4)[0] == "nvidia-smi lists 3 GPU(s), the stage asks for 4"
    assert health.gpu_problems("", 0) == []


# `nvidia-smi nvlink --status` of an 8-GPU NVLink node (cut to two GPUs, two links each) and of a PCIe card
NVLINK_UP = ("GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)\n\t Link 0: 26.562 GB/s\n\t Link 1: 26.562 GB/s\n"
             "GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-1)\n\t Link 0: 26.562 GB/s\n\t Link 1: 26.562 GB/s\n")
NVLINK_ONE_DOWN = NVLINK_UP.replace("GPU-1)\n\t Link 0: 26.562 GB/s", "GPU-1)\n\t Link 0: <inactive>")


def test_nvlink_links_down_from_nvidia_smi_output():
    assert health.nvlink_problems(NVLINK_UP) == []
    assert health.nvlink_problems(NVLINK_ONE_DOWN) == [
        "GPU 1: NVLink 0 is down (nvidia-smi nvlink --status: <inactive>)"]
    assert health.nvlink_problems("GPU 0: NVIDIA L4 (UUID: GPU-0)\n") == []  # PCIe: no link
    unbridged = NVLINK_UP.replace("26.562 GB/s", "<inactive>") + "\t Link 0, P2P is supported: true\n"
    assert health.nvlink_problems(unbridged) == []  # no link up: no NVLink


def fake_nvidia_smi(tmp_path, monkeypatch, ecc="0, 0\n1, 0\n", nvlink=NVLINK_UP, nvlink_exit=0):
    """An nvidia-smi on PATH that answers the ECC query and `nvlink --status`, and logs its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (tmp_path / "ecc").write_text(ecc)
    (tmp_path / "nvlink").write_text(nvlink)
    smi = bin_dir / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\necho \"$*\" >> {tmp_path}/calls\n"
                   f"if [ \"$1\" = nvlink ]; then cat {tmp_path}/nvlink; exit {nvlink_exit}; fi\ncat {tmp_path}/ecc\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return tmp_path / "calls"


def test_a_gpu_stage_checks_nvlink_through_nvidia_smi_and_a_cpu_stage_does_not(tmp_path, monkeypatch):
    calls = fake_nvidia_smi(tmp_path, monkeypatch, nvlink=NVLINK_ONE_DOWN)
    assert health.gpus(2, 10) == ["GPU 1: NVLink 0 is down (nvidia-smi nvlink --status: <inactive>)"]
    assert calls.read_text().splitlines()[-1] == "nvlink --status"
    calls.unlink()
    assert health.gpus(0, 10) == []  # no GPU asked: the ECC query only, as before
    assert calls.read_text().splitlines() == ["--query-gpu=index,ecc.errors.uncorrected.volatile.total --format=csv,noheader"]
    fake_nvidia_smi(tmp_path, monkeypatch, nvlink="NVLink is not supported\n", nvlink_exit=3)
    assert health.gpus(2, 10) == []  # a query that fails is no reason to exclude the node


def test_the_collective_runs_nccl_on_a_gpu_node_and_gloo_elsewhere(tmp_path, monkeypatch):
    argvs = []

    def run(argv, **kw):
        argvs.append(argv)
        return subprocess.CompletedProcess(argv, 0, stdout='{"ok": true, "gbps": 1.0}\n', stderr="")

    monkeypatch.setattr(health.subprocess, "run", run)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no nvidia-smi
    cfg = {"timeout_s": 20, "allreduce_mb": 1, "gpus_per_node": 2}
    health.collective("py", ["n1", "n2"], 1, 29500, cfg)
    fake_nvidia_smi(tmp_path, monkeypatch)
    health.collective("py", ["n1", "n2"], 1, 29500, {**cfg, "gpus_per_node": 0})
    health.collective("py", ["n1", "n2"], 1, 29500, cfg)
    gloo = ["py", "-m", "jobs.runtime.health_allreduce", "n1", "29500", "2", "1", "1", "10.0"]
    assert argvs == [gloo, gloo, gloo + ["nccl"]]


def test_the_nccl_all_reduce_without_cuda_reports_its_error_and_does_not_hang(cpu_python):
    p = subprocess.run([str(cpu_python), "-m", "jobs.runtime.health_allreduce", "localhost", "29411", "1", "0", "1",
                        "10", "nccl"], capture_output=True, text=True, timeout=120)
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert p.returncode == 1 and out["ok"] is False and out["backend"] == "nccl" and out["error"], out


def test_an_unwritable_run_directory_and_too_little_space(tmp_path):
    assert health.writable(tmp_path / "stages") is None
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert "stages is not writable" in health.writable(blocker / "stages")
    assert health.free_space(tmp_path, 0) is None
    assert "below health_check.min_free_gb=1e+12" in health.free_space(tmp_path, 1e12)


def test_the_interpreter_imports():
    assert health.imports(sys.executable, ["json", "csv"], 60) is None
    why = health.imports(sys.executable, ["json", "no_such_module_xyz"], 60)
    assert "cannot import json, no_such_module_xyz" in why and "No module named 'no_such_module_xyz'" in why


def test_a_real_gloo_all_reduce_between_two_processes(cpu_python):
    port = 29000 + (hash(str(cpu_python)) % 500)
    argv = [str(cpu_python), "-m", "jobs.runtime.health_allreduce", "localhost", str(port), "2"]
    procs = [subprocess.Popen(argv + [str(r), "1", "30"], stdout=subprocess.PIPE, text=True) for r in (0, 1)]
    outs = [json.loads(p.communicate(timeout=120)[0].strip().splitlines()[-1]) for p in procs]
    assert all(o["ok"] and o["sum_ok"] and o["gbps"] > 0 for o in outs), outs


def test_run_check_on_one_node_reports_and_decides(tmp_path):
    cfg = {"min_free_gb": 0, "timeout_s": 30, "imports": ["json"], "gpus_per_node": 0, "min_allreduce_gbps": 1,
           "allreduce_mb": 1}
    folder = layout.health_dir(tmp_path, "train") / "7_0-0"
    lines = []
    d = health.run_check(cfg, folder, tmp_path, ["n1"], 0, 29999, sys.executable, lines.append)
    assert d == {"bad": {}, "fault": None} and lines == ["health: n1: ok"]
    assert json.loads((folder / "n1.json").read_text())["problems"] == []
    bad = {**cfg, "min_free_gb": 1e12}
    d = health.run_check(bad, folder, tmp_path, ["n1"], 0, 29999, sys.executable, lines.append)
    assert list(d["bad"]) == ["n1"] and "min_free_gb" in d["bad"]["n1"][0]
    scratch = tmp_path / "file"
    scratch.write_text("")  # a scratch folder that cannot be made
    d = health.run_check({**cfg, "scratch_dirs": [str(scratch / "s")]}, folder, tmp_path, ["n1"], 0, 29999,
                         sys.executable, lines.append)
    assert d["bad"]["n1"][0].startswith(f"{scratch / 's'} is not writable")


# -- login side ----------------------------------------------------------------------------------------
def test_a_bandwidth_floor_of_zero_is_refused():
    with pytest.raises(ConfigErrors) as e:
        build_plan([compose(["pipeline=distributed", "cluster=local", "cluster.health_check.min_allreduce_gbps=0"])], [[]])
    (err,) = e.value.errors
    assert err.key == "cluster.health_check.min_allreduce_gbps" and "must be positive" in err.message


def plan_of(*overrides):
    return build_plan([compose(["pipeline=distributed", *overrides])], [[]])


def test_which_tasks_check_their_nodes():
    assert login_health.spec_part(plan_of("cluster=local").cluster, plan_of("cluster=local").stages["probe"]) is None
    one = plan_of("cluster=dev")
    assert login_health.spec_part(one.cluster, one.stages["probe"]) is None  # one node, no GPU
    two = plan_of("cluster=dev", "pipeline.vars.nodes=2")
    part = login_health.spec_part(two.cluster, two.stages["probe"])
    assert part["imports"] == ["torch"] and part["min_allreduce_gbps"] > 0 and part["gpus_per_node"] == 0
    assert part["across_nodes"] is True
    gpu = plan_of("cluster=dev", "pipeline.stages.probe.resources.gpus_per_node=1")
    assert login_health.spec_part(gpu.cluster, gpu.stages["probe"])["gpus_per_node"] == 1
    assert login_health.spec_part(gpu.cluster, gpu.stages["probe"])["across_nodes"] is False
    cmd = build_plan([compose(["pipeline=smoke", "cluster=dev", "pipeline.stages.fanout.resources.nodes=2",
                               "pipeline.stages.fanout.resources.gpus_per_node=1"])], [[]])
    part = login_health.spec_part(cmd.cluster, cmd.stages["fanout"])
    assert part["across_nodes"] is False and part["imports"] == []  # one jobs.task: its own node only
    off = plan_of("cluster=dev", "pipeline.vars.nodes=2", "cluster.health_check.enabled=false")
    assert login_health.spec_part(off.cluster, off.stages["probe"]) is None


@pytest.mark.parametrize("resources, gpus", [
    ({"gres": "gpu:a100:8"}, 8), ({"gres": "gpu:2,shard:4"}, 2), ({"gres": "shard:4"}, 0),
    ({"gpus_per_task": 1, "ntasks_per_node": 4}, 4), ({"gpus_per_task": 2}, 2),
    ({"gpus_per_node": "h100:4"}, 4), ({"gpus_per_node": 2, "gpus_per_task": 1, "ntasks_per_node": 8}, 8),
    ({}, 0)])
def test_the_gpus_a_node_must_have_in_every_form_a_stage_asks_for_them(resources, gpus):
    assert node_gpus(resources) == gpus


@pytest.mark.parametrize("override, gpus", [
    ("pipeline.stages.probe.resources.gres=gpu:a100:8", 8), ("pipeline.stages.probe.resources.gpus_per_task=2", 2),
    ("cluster.resources.gres=gpu:3", 3)])
def test_a_stage_asking_for_gpus_through_gres_or_gpus_per_task_checks_its_gpus(override, gpus):
    plan = plan_of("cluster=dev", override)
    part = login_health.spec_part(plan.cluster, plan.stages["probe"])
    assert part is not None and part["gpus_per_node"] == gpus and part["across_nodes"] is False


def test_bad_nodes_are_added_to_every_stages_exclude(tmp_path):
    plan = plan_of("cluster=dev", "pipeline.stages.probe.resources.exclude=n9")
    assert login_health.exclude_bad_nodes(plan, tmp_path) == []
    for node in ("n2", "n9"):
        layout.atomic_write_json(layout.bad_node_file(tmp_path, node), {"problems": ["full"]})
    assert login_health.exclude_bad_nodes(plan, tmp_path) == ["n2", "n9"]
    assert plan.stages["probe"].resources["exclude"] == "n9,n2"


# -- the task -----------------------------------------------------------------------------------------
def task_on(tmp_path: Path, rank: int, max_requeues: int = 2):
    from jobs.task import Task

    t = Task.__new__(Task)
    t.run_dir, t.stage, t.task, t.rank, t.job_id = tmp_path, "train", 0, rank, "5_0"
    t.spec = {"health_check": {"max_requeues": max_requeues}, "resources": {"exclude": None}}
    return t


def test_only_the_first_node_records_and_requeues_and_the_budget_for_bad_nodes_ends(tmp_path):
    assert task_on(tmp_path, rank=1).requeue_without({"n2": ["full"]}) == 0
    assert layout.bad_nodes(tmp_path) == {}  # the other nodes leave it to the first
    t = task_on(tmp_path, rank=0, max_requeues=0)
    with pytest.raises(RuntimeError, match=r"bad node\(s\) n2 after 0 requeue\(s\).*max_requeues=0"):
        t.requeue_without({"n2": ["full"]})
    assert layout.bad_nodes(tmp_path)["n2"]["problems"] == ["full"]  # recorded for later submissions anyway
    assert t.health_requeues() == 0


def test_the_gate_of_a_task_on_one_node_passes_or_names_its_node(tmp_path):
    import socket

    from jobs.task import BadNodes

    t = task_on(tmp_path, rank=0)
    t.restarts = 0
    t.spec["health_check"] = {"min_free_gb": 0, "timeout_s": 30, "imports": ["json"], "gpus_per_node": 0,
                              "min_allreduce_gbps": 1, "allreduce_mb": 1, "max_requeues": 2, "across_nodes": False}
    t.health_gate()  # passes
    t.spec["health_check"]["imports"] = ["no_such_module_xyz"]
    with pytest.raises(BadNodes) as e:
        t.health_gate()
    assert list(e.value.nodes) == [socket.gethostname()] and "no_such_module_xyz" in e.value.nodes[socket.gethostname()][0]
