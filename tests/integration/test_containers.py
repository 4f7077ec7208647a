"""Stages in a container image on the multi-node dev cluster (`scripts/dev-slurm up --nodes 3
--containers`: pyxis + enroot built from the vendored sources, a Debian image with python3 and no
Slurm). The launcher puts --container-image on the srun line only, mounts the run root and hub cache,
and requeues from the batch script on the host."""
import json

import pytest
from conftest import CLI, ROOT, hub_cache_with, queued

from jobs import layout

pytestmark = pytest.mark.slurm
HELPER = ROOT / "tests" / "integration" / "container_helper.py"


@pytest.fixture
def ccli(tmp_path, dev_slurm_mn_image) -> CLI:
    root = tmp_path / "runs"
    root.mkdir()
    return CLI(root, env={"SLURM_CONF": dev_slurm_mn_image["SLURM_CONF"]})


@pytest.mark.slow
def test_command_and_python_stages_run_in_the_image_and_survive_a_requeue(ccli, tmp_path):
    """Both runs at once: smoke (command shards that read the image's /etc, a python reducer from user
    code that probes where it runs, a python counter that requeues itself) and requeue (a command
    counter that requeues itself). Every stage of both runs is in the image."""
    cache = hub_cache_with(tmp_path / "hub")
    in_image = ["+cluster.stage_environments.command=image", "+cluster.stage_environments.python=image"]
    ccli("run", "pipeline=smoke", "cluster=dev-mn", *in_image, f"pipeline.code=[{HELPER}]",
         "pipeline.stages.reduce.target=container_helper:reduce_and_probe", f"cluster.hub_cache={cache}",
         "pipeline.stages.shards.command='cat /etc/launcher-dev-image > $LAUNCHER_OUTPUT_DIR/image.txt; "
         "echo $((LAUNCHER_TASK_INDEX + 1)) > $LAUNCHER_OUTPUT_DIR/value.txt'")
    smoke_run = ccli.run_dir()
    ccli("run", "pipeline=requeue", "cluster=dev-mn", *in_image)
    requeue_run = ccli.run_dir()
    for run in (smoke_run.name, requeue_run.name):
        st = ccli.wait(run, timeout=300, poll=1)
        assert st["state"] == "COMPLETED", (st, ccli("logs", run, "reduce", check=False).stderr[-3000:])

    # what the tasks wrote inside the container is on the host, under the run directory
    image_txt = (layout.output_dir(smoke_run, "shards", 0, 2) / "image.txt").read_text()
    assert image_txt.startswith("launcher dev image: debian minbase + python3")
    assert (layout.output_dir(smoke_run, "reduce", 0, 0) / "total.txt").read_text().strip() == "10"
    probe = json.loads((layout.output_dir(smoke_run, "reduce", 0, 0) / "probe.json").read_text())
    assert probe["executable"] == "/usr/bin/python3" and probe["version"] >= [3, 10], probe
    assert probe["image_marker"] and not probe["slurmd_binary"], probe  # the image's /etc, no Slurm there
    assert probe["cwd"] == str(smoke_run / "code") and probe["hub_cache"] == ["models--org--tiny"], probe
    attempts = json.loads((layout.output_dir(smoke_run, "checkpointing", 0, 0) / "attempts.json").read_text())
    assert [a["from"] for a in attempts] == [0, 8]  # requeued once, continued from its checkpoint
    out = layout.output_dir(requeue_run, "command_counter", 0, 0)
    assert out.joinpath("count.txt").read_text().strip() == "30" and out.joinpath("restarts.txt").read_text().strip() == "1"
    log = ccli("logs", requeue_run.name, "command_counter").stderr
    assert "the batch script (on the host) runs scontrol requeue" in log and "sys.prefix /usr)" in log
    for run in (smoke_run, requeue_run):
        assert not list(run.glob("stages/*/markers/*failed*"))


@pytest.mark.slow
def test_a_torchrun_stage_runs_in_the_image_on_two_nodes_with_the_host_environment(ccli, cpu_python,
                                                                                   dev_slurm_mn_image):
    """The cpu stage environment (a venv on the host, with torch) in the image: the launcher mounts the
    venv and its base interpreter; jobs.adapters.torchrun gets the allocation's hosts from the batch script (no
    scontrol in the image); torchrun's c10d rendezvous on the first node, gloo all-reduce."""
    ccli("run", "pipeline=distributed", "cluster=dev-mn", "pipeline.vars.nodes=2", "pipeline.vars.nproc_per_node=1",
         "pipeline.stages.probe.resources.mem_gb=4", f"pipeline.code=[{ROOT / 'tests/integration/container_torch_probe.py'}]",
         "pipeline.stages.probe.launch.script='-m container_torch_probe'",
         f"cluster.environments.cpu.container_image={dev_slurm_mn_image['DEV_SLURM_MN_IMAGE']}")
    st = ccli.wait(timeout=300, poll=1)
    assert st["state"] == "COMPLETED", (st, ccli("logs", "latest", "probe", check=False).stderr[-3000:])
    out = layout.output_dir(ccli.run_dir(), "probe", 0, 0)
    ranks = [json.loads(p.read_text()) for p in sorted(out.glob("rank-*.json"))]
    assert [r["rank"] for r in ranks] == [0, 1] and {r["all_reduce"] for r in ranks} == {2.0}, ranks
    assert len({r["node"] for r in ranks}) == 2 and all(r["image_marker"] and not r["slurmd_binary"] for r in ranks)
    script = next(ccli.run_dir().glob("stages/probe/scripts/*.sbatch")).read_text()
    assert f"{cpu_python.parent.parent}:{cpu_python.parent.parent}" in script  # the host venv, mounted


@pytest.mark.parametrize("overrides,key,needle", [
    (["cluster.environments.image.container_image=/no/such/image.sqsh"],
     "cluster.environments.image.container_image", "container image /no/such/image.sqsh does not exist"),
    (["+cluster.environments.image.container_mounts=['/tmp:{root}']"],
     "cluster.environments.image.container_mounts.0", "hides the run directory"),
    (["+cluster.environments.image.container_mounts=['/data:/data','/tmp:{parent}']"],
     "cluster.environments.image.container_mounts.1", "hides the run directory"),
])
def test_bad_container_settings_fail_before_anything_is_queued(ccli, dev_slurm_mn_image, overrides, key, needle):
    root = ccli.run_root.resolve()
    args = [o.format(root=root, parent=root.parent) for o in overrides]
    p = ccli("run", "pipeline=smoke", "cluster=dev-mn", "+cluster.stage_environments.reduce=image", *args, check=False)
    assert p.returncode == 1 and f"stage 'reduce': {key}: " in p.stderr and needle in p.stderr, p.stderr
    assert "nothing was submitted" in p.stderr
    assert queued(dev_slurm_mn_image, root=ccli.run_root) == set() and not any(ccli.run_root.glob("*/run.json"))


def test_a_cluster_without_pyxis_is_refused(dcli, dev_slurm, tmp_path):
    """The single-node dev cluster has no pyxis: `srun --help` lists no --container-image."""
    image = tmp_path / "image.sqsh"
    image.write_bytes(b"hsqs")
    p = dcli("run", "pipeline=smoke", "cluster=dev",
             f"+cluster.environments={{img: {{container_image: {image}, python: /usr/bin/python3}}}}",
             "+cluster.stage_environments.reduce=img", check=False)
    assert p.returncode == 1 and "stage 'reduce': cluster.environments.img.container_image: " in p.stderr, p.stderr
    assert "no container support" in p.stderr and "--container-image" in p.stderr
    assert queued(dev_slurm, root=dcli.run_root) == set()
