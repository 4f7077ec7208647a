"""Container stages (pyxis): the mounts the launcher adds, the srun-only flags, the host-side
requeue, and preflight's refusals (launcher/slurm/containers.py). The real thing runs in
tests/integration/test_containers.py on the multi-node dev cluster."""
import os
from pathlib import Path

import pytest

from jobs import task as jobs_task
from launcher.slurm import containers
from launcher.config.compose import PROJECT_ROOT, compose
from launcher.plan.model import build_plan
from launcher.plan.preflight import preflight
from launcher.plan.render import build_requests, render_script
from launcher.slurm.facts import ClusterInfo, Node, Partition

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
IMG = "+cluster.environments={img: {container_image: /img/base.sqsh, python: /usr/bin/python3}}"


def plan_of(*overrides, cluster="dev"):
    return build_plan([compose(["pipeline=smoke", f"cluster={cluster}", *overrides])], [[]])


def script(plan, stage, run_dir="/shared/runs/RUN"):
    req = next(r for r in build_requests(plan, {stage: [0]}, 1001) if r.stage == stage)
    return render_script(plan, req, Path(run_dir), "RUN")


def test_golden_sbatch_of_a_container_stage():
    """The image, mounts and workdir on the srun line only; the host-side requeue after the step."""
    plan = plan_of("+cluster.environments={img: {container_image: /img/base.sqsh, python: /usr/bin/python3, "
                   "container_mounts: ['/data:/data:ro']}}", "+cluster.stage_environments.fanout=img",
                   "cluster.hub_cache=/shared/hub")
    text = script(plan, "fanout").replace(str(PROJECT_ROOT), "<project>")
    golden = GOLDEN / "container.sbatch"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()
    assert not any(line.startswith("#SBATCH") and "container" in line for line in text.splitlines())
    srun = next(line for line in text.splitlines() if line.startswith("srun "))
    assert ("--container-image=/img/base.sqsh --container-mounts=/data:/data:ro,/shared/runs:/shared/runs,"
            "/shared/hub:/shared/hub --container-workdir=/shared/runs/RUN/code /usr/bin/python3 -u -m jobs.task") in srun


def test_stages_without_an_image_have_no_container_lines():
    text = script(plan_of(IMG, "+cluster.stage_environments.fanout=img"), "shards")
    assert "container" not in text and "LAUNCHER_IN_CONTAINER" not in text and "launcher_rc" not in text


def test_user_mount_of_the_same_path_is_not_added_twice(tmp_path):
    env = {"name": "img", "python": "/usr/bin/python3", "container_image": "/i.sqsh",
           "container_mounts": ["/shared/runs:/shared/runs:ro"]}
    cluster = {"environments": {"img": {"python": "/usr/bin/python3"}}}
    assert containers.mounts(cluster, env, Path("/shared/runs/R")) == ["/shared/runs:/shared/runs:ro"]
    cluster["secrets_file"] = "/home/me/.config/launcher/secrets.env"  # jobs.task reads it: read-only
    assert containers.mounts(cluster, env, Path("/shared/runs/R"))[1:] == [
        "/home/me/.config/launcher/secrets.env:/home/me/.config/launcher/secrets.env:ro"]


def test_a_host_interpreter_is_mounted_with_its_venv_base(tmp_path):
    """A built environment (a venv on the host): its prefix and the base installation pyvenv.cfg names."""
    venv = tmp_path / "envs" / "cpu"
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /opt/python/3.11/bin\nversion = 3.11.7\n")
    cluster = {"environments": {"cpu": {"build": "cpu", "container_image": "/i.sqsh"}}}
    env = {"name": "cpu", "python": str(venv / "bin" / "python"), "container_image": "/i.sqsh", "container_mounts": []}
    assert containers.mounts(cluster, env, Path("/runs/R")) == [
        "/runs:/runs", f"{venv}:{venv}", "/opt/python/3.11:/opt/python/3.11"]
    # an environment naming its own python with the image: that interpreter is inside the image
    cluster = {"environments": {"cpu": {"python": "/opt/venv/bin/python", "container_image": "/i.sqsh"}}}
    assert containers.host_interpreter_paths(cluster, {**env, "python": "/opt/venv/bin/python"}) == []


@pytest.mark.parametrize("mount,bad", [
    ("/elsewhere:{root}", True),                # the run root itself, from another host path
    ("/elsewhere:{parent}", True),              # a parent of it
    ("/scratch/x:/", True),                     # the container's root
    ("{root}:{root}", False),                   # the same path: nothing hidden
    ("{parent}:{parent}:ro", False),
    ("/data:/data", False),                     # elsewhere
    ("/data:{root}/sub", False),                # inside the run root: hides no run directory
    ("/data:relative", True),                   # not an absolute container path
])
def test_mounts_that_hide_the_run_directory(tmp_path, mount, bad):
    root = tmp_path / "runs"
    root.mkdir()
    m = mount.format(root=root, parent=tmp_path)
    found = containers.mount_problems({"container_mounts": [m]}, root)
    assert bool(found) == bad, found
    if bad and "relative" not in m:
        assert found[0][0] == 0 and "hides the run directory" in found[0][1]


def info():
    node = Node(name="mn1", cpus=4, mem_mb=8000, gpus=0, partitions=["debug"], state="IDLE")
    return ClusterInfo(max_array_size=1001, partitions={"debug": Partition(
        name="debug", max_time_min=240, max_nodes=None, default=True, state="UP", nodes=[node])})


def test_preflight_asks_srun_once_and_names_each_container_stage(tmp_path):
    image = tmp_path / "i.sqsh"
    image.write_bytes(b"hsqs")
    calls = []

    def srun_help():
        calls.append(1)
        return "Usage: srun [OPTIONS(0)...]\n  --mpi=type\n"

    plan = plan_of(f"+cluster.environments={{img: {{container_image: {image}, python: /usr/bin/python3}}}}",
                   "+cluster.stage_environments.python=img")  # reduce and checkpointing
    found = [(e.stage, e.key) for e in preflight(plan, tmp_path, info(), srun_help=srun_help)
             if "container support" in e.message]
    assert sorted(found) == [("checkpointing", "cluster.environments.img.container_image"),
                             ("reduce", "cluster.environments.img.container_image")]
    assert len(calls) == 1
    calls.clear()
    ok = "  --container-image=[USER@][REGISTRY#]IMAGE[+HANDLE]  [pyxis] the image to use\n"
    assert not [e for e in preflight(plan, tmp_path, info(), srun_help=lambda: calls.append(1) or ok)
                if "container" in e.key]
    assert len(calls) == 1
    plain = plan_of()  # no container stage: srun is not asked
    preflight(plain, tmp_path, info(), srun_help=lambda: calls.append(1) or "")
    assert len(calls) == 1


def test_preflight_refuses_a_mount_over_the_run_root(tmp_path):
    image = tmp_path / "i.sqsh"
    image.write_bytes(b"hsqs")
    root = tmp_path / "runs"
    root.mkdir()
    plan = plan_of(f"+cluster.environments={{img: {{container_image: {image}, python: /usr/bin/python3, "
                   f"container_mounts: ['/data:/data', '/scratch:{tmp_path}']}}}}", "+cluster.stage_environments.reduce=img")
    errs = [e for e in preflight(plan, root, info(), srun_help=lambda: "--container-image") if "mount" in e.message]
    assert [(e.stage, e.key) for e in errs] == [("reduce", "cluster.environments.img.container_mounts.1")]


def test_a_task_in_a_container_leaves_the_requeue_to_the_batch_script(tmp_path, monkeypatch):
    """No scontrol in the image: requeue() returns REQUEUE_EXIT without calling it."""
    monkeypatch.setenv("LAUNCHER_IN_CONTAINER", "1")
    monkeypatch.setenv("PATH", str(tmp_path))  # no scontrol, no scancel: calling one would raise
    for k in ("SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_PROCID", "SLURM_RESTART_COUNT"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    spec = {"run_dir": str(tmp_path), "stage": "s", "hash": "h", "tasks_per_point": 1, "payloads": [{}],
            "run_id": "r", "parents": [], "requeue": {"max": 2, "signal": "USR2", "signal_delay_s": 30},
            "backend": "slurm", "kind": "command"}
    t = jobs_task.Task(spec)
    assert t.requeue() == jobs_task.REQUEUE_EXIT == containers.REQUEUE_EXIT
    assert jobs_task.CANCEL_EXIT == containers.CANCEL_EXIT
