"""Per-stage environments, code snapshots, secrets and setup failures, end to end (issue 3)."""
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, queued, stage_counts

from jobs import layout


@pytest.fixture(scope="module")
def smoke_env():
    """The second environment (conf/envs/smoke.txt), built the way an operator would."""
    p = subprocess.run([sys.executable, "-m", "launcher", "env", "build", "smoke"], capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    again = subprocess.run([sys.executable, "-m", "launcher", "env", "build", "smoke"], capture_output=True,
                           text=True, timeout=600)
    assert "nothing to do" in again.stdout
    return ROOT / ".envs" / "smoke"


def prefix_in_log(cli, stage):
    line = next(x for x in cli("logs", "latest", stage).stderr.splitlines() if "sys.prefix" in x)
    return line.split("sys.prefix ")[1].split(")")[0]


@pytest.mark.parametrize("cluster", ["local", "dev"])
def test_two_stages_two_environments_recorded(request, smoke_env, cluster):
    cli = request.getfixturevalue("cli" if cluster == "local" else "dcli")
    cli("run", "pipeline=smoke", f"cluster={cluster}", "+cluster.stage_environments.reduce=smoke")
    assert cli.wait(timeout=240)["state"] == "COMPLETED"
    assert prefix_in_log(cli, "reduce") == str(smoke_env)
    assert prefix_in_log(cli, "shards") == sys.prefix
    rec = json.loads((cli.run_dir() / "environments.json").read_text())
    assert rec["stages"]["reduce"]["name"] == "smoke" and rec["stages"]["shards"]["name"] is None
    pkgs = {py: set(v["packages"]) for py, v in rec["interpreters"].items()}
    assert len(pkgs) == 2
    assert any(p.startswith("hydra-core==") for p in pkgs[sys.executable])  # the launcher's own venv
    assert not any(p.startswith("hydra-core==") for p in pkgs[str(smoke_env / "bin" / "python")])
    assert rec["code"]["id"] and (cli.run_dir() / "code" / "jobs" / "task.py").exists()


@pytest.mark.parametrize("env,needle", [
    ("{python: /no/python}", "stage 'fanout': cluster.environments.x.python: interpreter /no/python does not exist"),
    ("{imports: [no_such_lib_xyz]}", "stage 'fanout': cluster.environments.x.python: "),
    ("{container_image: /no/image.sqsh}",
     "stage 'fanout': cluster.environments.x.container_image: container image /no/image.sqsh does not exist"),
])
def test_bad_environment_fails_at_run_on_slurm_naming_the_stage(dcli, dev_slurm, env, needle):
    p = dcli("run", "pipeline=smoke", "cluster=dev", f"+cluster.environments={{x: {env}}}",
             "+cluster.stage_environments.fanout=x", check=False)
    assert p.returncode == 1 and needle in p.stderr, p.stderr
    assert queued(dev_slurm, root=dcli.run_root) == set() and not any(dcli.run_root.glob("*/run.json"))


MOD = """import json, os
import jobs, mypkg
VERSION = "{v}"


def reduce(ctx):
    (ctx.output_dir / "seen.json").write_text(json.dumps(
        {{"version": VERSION, "jobs": jobs.__file__, "mypkg": mypkg.__file__, "cwd": os.getcwd()}}))
"""
# `python -m mypkg.tool`, run by a command stage: a child of the task, started by bash.
TOOL = """import json, os, pathlib
import jobs, mypkg
from mypkg.mod import VERSION
pathlib.Path(os.environ["LAUNCHER_OUTPUT_DIR"], "tool.json").write_text(json.dumps(
    {"version": VERSION, "jobs": jobs.__file__, "mypkg": mypkg.__file__, "cwd": os.getcwd()}))
"""


def user_project(root):
    """A user's git repository holding the package `mypkg` (pipeline.code) and the clutter a real
    one collects: git-ignored data, Hydra outputs, a virtual environment, caches, old runs."""
    pkg = root / "mypkg"
    for d in ("data", "outputs/2026-01-01/12-00-00/.hydra", "multirun/2026-01-01/0", "__pycache__", "env/bin",
              "runs/old"):
        (pkg / d).mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "mod.py").write_text(MOD.format(v="v1"))
    (pkg / "tool.py").write_text(TOOL)
    (pkg / "data" / "shard.bin").write_bytes(b"0" * 4096)
    (pkg / "outputs/2026-01-01/12-00-00/.hydra/config.yaml").write_text("a: 1\n")
    (pkg / "multirun/2026-01-01/0/log.txt").write_text("x\n")
    (pkg / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"\0")
    (pkg / "env" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (pkg / "runs/old/run.json").write_text("{}\n")
    (root / ".gitignore").write_text("data/\n")
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    return pkg


@pytest.mark.parametrize("cluster", ["local", "dev"])
@pytest.mark.parametrize("where", ["repository", "project"])
def test_tasks_import_the_snapshot_whatever_the_launch_directory(request, tmp_path, cluster, where):
    """Launched from the launcher's repository root (the README's way: `jobs/` lies in the working
    directory) or from the user's project root (`mypkg/` does), with code edited after `launcher
    run` and before the tasks start: every task, and the python a command stage starts, imports
    the run's snapshot; the task log says so; the snapshot holds the code and none of the clutter."""
    cli = request.getfixturevalue("cli" if cluster == "local" else "dcli")
    proj = tmp_path / "proj"
    pkg = user_project(proj)
    cli.cwd = ROOT if where == "repository" else proj
    gate = tmp_path / "gate"  # the shards wait for it: nothing imports mypkg before the edit
    cli("run", "pipeline=smoke", f"cluster={cluster}", f"pipeline.code=[{pkg}]",
        "pipeline.stages.reduce.target=mypkg.mod:reduce", "pipeline.stages.checkpointing.params.force_requeue_at=null",
        f"pipeline.stages.shards.command='while [ ! -e {gate} ]; do sleep 0.2; done; {sys.executable} -m mypkg.tool'")
    (pkg / "mod.py").write_text(MOD.format(v="v2"))  # edits after `launcher run`
    gate.touch()
    assert cli.wait(timeout=240)["state"] == "COMPLETED"
    run_dir = cli.run_dir()
    code = (run_dir / "code").resolve()
    seen = [json.loads((layout.output_dir(run_dir, "reduce", 0, 0) / "seen.json").read_text())]
    seen += [json.loads((layout.output_dir(run_dir, "shards", 0, i) / "tool.json").read_text()) for i in range(4)]
    for s in seen:
        assert s["version"] == "v1", s
        assert Path(s["jobs"]).resolve() == code / "jobs" / "__init__.py", s
        assert Path(s["mypkg"]).resolve() == code / "mypkg" / "__init__.py", s
        assert Path(s["cwd"]).resolve() == code, s
    logged = [line for f in sorted(run_dir.glob("stages/*/logs/*.err")) for line in f.read_text().splitlines()
              if "sys.prefix" in line]
    assert len(logged) >= 8 and all(line.endswith(f"code {code}, working directory {code}") for line in logged), logged
    held = sorted(str(p.relative_to(code / "mypkg")) for p in (code / "mypkg").rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts)  # the tasks' own imports write some
    assert held == ["__init__.py", "mod.py", "tool.py"]


RANK = """import json, os, pathlib, time
gate = pathlib.Path(os.environ["GATE"])
while not gate.exists():  # imports mypkg.version only after the test edited it
    time.sleep(0.2)
import jobs
from mypkg.version import VERSION
pathlib.Path(os.environ["LAUNCHER_OUTPUT_DIR"], f"rank-{os.environ['RANK']}.json").write_text(json.dumps(
    {"version": VERSION, "jobs": jobs.__file__, "cwd": os.getcwd()}))
"""


def test_torchrun_workers_import_the_snapshot(cli, tmp_path, cpu_python):
    """kind=torchrun from the user's project root: torchrun's workers (`python -m mypkg.rank`,
    grandchildren of the task) import the run's snapshot, not the edited code beside the shell."""
    pkg = tmp_path / "proj" / "mypkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "rank.py").write_text(RANK)
    (pkg / "version.py").write_text("VERSION = 'v1'\n")
    gate = tmp_path / "gate"
    cli.cwd = pkg.parent
    cli("run", "pipeline=distributed", "cluster=local", f"pipeline.code=[{pkg}]",
        "pipeline.stages.probe.launch.script='-m mypkg.rank'", f"+pipeline.stages.probe.env.GATE={gate}")
    (pkg / "version.py").write_text("VERSION = 'v2'\n")
    gate.touch()
    assert cli.wait(timeout=180)["state"] == "COMPLETED"
    code = (cli.run_dir() / "code").resolve()
    ranks = [json.loads(f.read_text()) for f in sorted(layout.output_dir(cli.run_dir(), "probe", 0, 0).glob("rank-*"))]
    assert len(ranks) == 2
    for r in ranks:
        assert r["version"] == "v1" and Path(r["jobs"]).resolve() == code / "jobs" / "__init__.py", r
        assert Path(r["cwd"]).resolve() == code, r


def test_local_backend_runs_this_launcher_from_a_directory_holding_another(tmp_path):
    """cluster=local from a directory with `launcher/` and `jobs/` folders of its own (another
    checkout): the scheduler process the launcher starts, and the tasks it runs, import this
    launcher and the run's snapshot, not those folders."""
    here = tmp_path / "other-checkout"
    for pkg in ("launcher", "jobs"):
        (here / pkg).mkdir(parents=True)
        (here / pkg / "__init__.py").write_text("raise ImportError('imported from the working directory')\n")
    runs = tmp_path / "runs"
    p = subprocess.run([str(Path(sys.executable).parent / "launcher"), "run", "pipeline=smoke", "cluster=local",
                        f"run_root={runs}", "wait=true", "poll_s=0.3",
                        "pipeline.stages.checkpointing.params.force_requeue_at=null"],
                       cwd=here, capture_output=True, text=True, timeout=120)
    logs = "".join(f.read_text() for f in runs.glob("*/local/driver.log"))
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:] + logs[-2000:]
    assert "imported from the working directory" not in logs


@pytest.mark.parametrize("cluster", ["local", "dev"])
def test_secret_reaches_the_task_and_no_file(request, cluster):
    cli = request.getfixturevalue("cli" if cluster == "local" else "dcli")
    secret = f"s3cr3t-{time.time_ns()}"
    cli.env["LAUNCHER_TEST_SECRET"] = secret
    cli("run", "pipeline=smoke", f"cluster={cluster}", "cluster.secrets=[LAUNCHER_TEST_SECRET]", "wait=true",
        "pipeline.stages.fanout.command='printf %s \"$LAUNCHER_TEST_SECRET\" | sha256sum > $LAUNCHER_OUTPUT_DIR/sha'")
    run_dir = cli.run_dir()
    seen = (layout.output_dir(run_dir, "fanout", 0, 0) / "sha").read_text().split()[0]
    assert seen == hashlib.sha256(secret.encode()).hexdigest()
    hits = subprocess.run(["grep", "-rl", secret, str(cli.run_root)], capture_output=True, text=True).stdout
    assert hits == ""


def test_resume_runs_the_snapshot_unless_forced(cli, tmp_path):
    user = tmp_path / "usercode"
    user.mkdir()
    module = user / "usermod.py"
    module.write_text("def reduce(ctx):\n    (ctx.output_dir / 'version.txt').write_text('v1')\n")
    args = ["pipeline=smoke", "cluster=local", f"pipeline.code=[{user}]", "pipeline.stages.reduce.target=usermod:reduce",
            "pipeline.vars.fail_once_task=0", "wait=true", "poll_s=0.3"]
    assert cli("run", *args, check=False).returncode == 1  # shard 0 fails once: reduce never ran
    module.write_text("def reduce(ctx):\n    (ctx.output_dir / 'version.txt').write_text('v2')\n")
    cli("resume", "latest", "--wait")
    out = layout.output_dir(cli.run_dir(), "reduce", 0, 0) / "version.txt"
    assert out.read_text() == "v1"  # the code of submission time
    cli("run", *args[:-3], "pipeline.vars.fail_once_task=0", "wait=true", check=False)
    module.write_text("def reduce(ctx):\n    (ctx.output_dir / 'version.txt').write_text('v3')\n")
    cli("resume", "latest", "--force", "--wait")
    assert (layout.output_dir(cli.run_dir(), "reduce", 0, 0) / "version.txt").read_text() == "v3"
    assert len(list(cli.run_dir().glob("code.*"))) == 1  # the earlier snapshot is kept


def test_secrets_file_is_read_by_the_task_and_copied_nowhere(cli, tmp_path):
    secret = f"file-s3cr3t-{time.time_ns()}"
    f = tmp_path / "secrets.env"
    f.write_text(f"# tokens\nLAUNCHER_FILE_SECRET={secret}\n")
    f.chmod(0o644)
    p = cli("run", "pipeline=smoke", "cluster=local", f"cluster.secrets_file={f}", check=False)
    assert p.returncode == 1 and "cluster.secrets_file" in p.stderr and "chmod 600" in p.stderr
    f.chmod(0o600)
    cli("run", "pipeline=smoke", "cluster=local", f"cluster.secrets_file={f}", "wait=true",
        "pipeline.stages.fanout.command='printf %s \"$LAUNCHER_FILE_SECRET\" | sha256sum > $LAUNCHER_OUTPUT_DIR/sha'")
    seen = (layout.output_dir(cli.run_dir(), "fanout", 0, 1) / "sha").read_text().split()[0]
    assert seen == hashlib.sha256(secret.encode()).hexdigest()
    assert subprocess.run(["grep", "-rl", secret, str(cli.run_root)], capture_output=True, text=True).stdout == ""


def test_failing_setup_line_fails_the_task_with_the_error_in_its_log(cli):
    p = cli("run", "pipeline=smoke", "cluster=local", "cluster.setup=['ls /no-such-dir-for-setup']", "wait=true",
            "poll_s=0.3", check=False)
    assert p.returncode == 1
    assert stage_counts(cli.status())["shards"]["failed"] == 4
    err = cli("logs", "latest", "shards").stderr
    assert "No such file or directory" in err and "launcher: setup failed (exit 2): ls /no-such-dir-for-setup" in err


def test_run_from_inside_salloc(dcli, dev_slurm):
    """sbatch must not inherit the allocation's SLURM_* variables."""
    env = {**dcli.env, **dev_slurm}
    cmd = (f"{sys.executable} -m launcher run pipeline=smoke cluster=dev run_root={dcli.run_root} && "
           "echo INSIDE=$SLURM_JOB_ID")
    p = subprocess.run(["salloc", "-N1", "-p", "debug", "--time=5", "--mem=500M", "--ntasks=2", "bash", "-c", cmd], env=env, cwd=dcli.run_root,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "INSIDE=" in p.stdout, p.stdout + p.stderr
    assert dcli.wait(timeout=240)["state"] == "COMPLETED"


@pytest.mark.slow
def test_env_build_cpu_stack_then_nothing_to_do(cli):
    """The data/align/eval environment (conf/envs/cpu.txt): ~2 GB, a few minutes on a fresh machine."""
    p = subprocess.run([sys.executable, "-m", "launcher", "env", "build", "cpu"], capture_output=True, text=True,
                       timeout=1500)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    again = subprocess.run([sys.executable, "-m", "launcher", "env", "build", "cpu"], capture_output=True, text=True)
    assert "nothing to do" in again.stdout
    # preflight imports datatrove, trl, lighteval and transformers with it, offline; then a stage runs in it
    cli("run", "pipeline=smoke", "cluster=local", "+cluster.stage_environments.reduce=cpu", "wait=true", "poll_s=0.5")
    assert prefix_in_log(cli, "reduce") == str(ROOT / ".envs" / "cpu")
