"""Shared helpers: run the real CLI in a subprocess, in a temporary run root."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Test tiers (pyproject.toml lists the markers; README "Tests" says what each covers and costs):
#   unit   tests/unit: pure functions, no scheduler, no stage environment (a few minutes in all)
#   local  end-to-end on the embedded local backend (cluster=local)
#   slurm  against the real dev cluster (scripts/dev-slurm, root)
#   fault  fault injection on the dev cluster (tests/faults)
#   slow   more than ~30 s each (real time limits, training, serving)
#   extended  left out of the CI tier (`scripts/test`, = .ci/run) for time; `scripts/test --all` runs them
# unit/local/slurm/fault are given here from the test's folder and fixtures; slow and extended are
# written on the tests themselves.
SLURM_FIXTURES = {"dev_slurm", "dcli", "dev_slurm_noacct", "dev_slurm_mn", "dev_slurm_mn_image"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        folder = Path(str(item.fspath)).parent.name
        fixtures = set(getattr(item, "fixturenames", ()))
        if folder == "unit":
            item.add_marker(pytest.mark.unit)
        elif folder == "faults":
            item.add_marker(pytest.mark.fault)
            item.add_marker(pytest.mark.slurm)
        elif fixtures & SLURM_FIXTURES or item.get_closest_marker("slurm"):
            item.add_marker(pytest.mark.slurm)
        else:
            item.add_marker(pytest.mark.local)


# Disk: CI's machine shares its disk, and a full one fails every later test at its setup (stop 30's CI:
# 29 errors, then pytest's own crash). pyproject's tmp_path_retention_policy = "failed" removes a passed
# test's tmp_path at its teardown; this reports what the tests wrote there and the free space, so that
# the next such failure says why in CI's output.
_DISK = {"written": 0, "largest": [], "free_at_start": None}
LOW_DISK_BYTES = 4 << 30  # below this before the tests, the session starts with a warning


def pytest_sessionstart(session):
    free = shutil.disk_usage(session.config._tmp_path_factory.getbasetemp()).free
    _DISK["free_at_start"] = free
    if free < LOW_DISK_BYTES:
        print(f"\nWARNING: {free / 2**30:.1f} GiB free for the tests' temporary folders "
              f"({session.config._tmp_path_factory.getbasetemp()}); the integration tiers write several GiB",
              file=sys.stderr)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_teardown(item, nextitem):
    path = getattr(item, "funcargs", {}).get("tmp_path")
    if isinstance(path, Path) and path.is_dir():  # measured before the fixture's teardown removes it
        from launcher.run import gc  # the bytes under a folder, as `launcher gc` counts them

        size = gc.size(path)
        _DISK["written"] += size
        _DISK["largest"] = sorted([*_DISK["largest"], (size, item.nodeid)], reverse=True)[:5]
    return (yield)


def pytest_terminal_summary(terminalreporter, config):
    base = config._tmp_path_factory.getbasetemp()
    base = next(p for p in (base, *base.parents) if p.exists())  # removed at the session's end when all passed
    free, start = shutil.disk_usage(base).free, _DISK["free_at_start"]
    lines = [f"free space {start / 2**30:.1f} GiB at the start, {free / 2**30:.1f} GiB now ({base})"]
    if not getattr(config.option, "numprocesses", None):  # under xdist each worker counts its own
        lines.append(f"tmp_path: {_DISK['written'] / 2**30:.2f} GiB written by the tests in all, largest:")
    lines += [f"  {size / 2**20:8.1f} MiB  {nodeid}" for size, nodeid in _DISK["largest"]]
    terminalreporter.write_sep("=", "disk use")
    for line in lines:
        terminalreporter.write_line(line)


@pytest.fixture(autouse=True, scope="session")
def _run_index(tmp_path_factory):
    """The runs the tests launch are indexed (launcher/run/runindex.py) here, not in your ~/.local/state."""
    os.environ["LAUNCHER_STATE_DIR"] = str(tmp_path_factory.mktemp("launcher-state"))


@pytest.fixture(autouse=True, scope="session")
def _no_site_defaults(tmp_path_factory):
    """The tests say their cluster profile (or mean the root default, local): your $LAUNCHER_CLUSTER, your
    ~/.config/launcher/config.yaml and your config directories stay out, and no test asks sinfo whether
    this host is a Slurm client (launcher/config/sitedefault.py; tests/unit/test_site_default.py sets them)."""
    for name in ("LAUNCHER_CLUSTER", "LAUNCHER_CONFIG_DIRS"):
        os.environ.pop(name, None)
    os.environ["LAUNCHER_CONFIG_FILE"] = str(tmp_path_factory.mktemp("launcher-config") / "config.yaml")
    os.environ["LAUNCHER_SLURM_PROBE"] = "0"


@pytest.fixture(autouse=True, scope="session")
def _this_tree_first():
    """The CLI the tests start (`python -m launcher` in a run root) imports this checkout's code, not
    whichever tree .venv's editable install points at (a second worktree sharing one .venv)."""
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)


class CLI:
    def __init__(self, run_root: Path, env: dict | None = None):
        self.run_root = run_root
        self.cwd = run_root  # where the operator types the command (set it to launch from elsewhere)
        self.env = {**os.environ, "LAUNCHER_RUN_ROOT": str(run_root), **(env or {})}

    def __call__(self, *args: str, check: bool | None = True, timeout: float = 300) -> subprocess.CompletedProcess:
        argv = list(args)
        if argv and argv[0] in ("run", "plan") and not any(a.startswith("run_root=") for a in argv):
            argv.append(f"run_root={self.run_root}")
        p = subprocess.run([sys.executable, "-m", "launcher", *argv], cwd=self.cwd, env=self.env,
                           capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"launcher {' '.join(args)} exited {p.returncode}\n{p.stdout}\n{p.stderr}")
        return p

    def status(self, run: str = "latest") -> dict:
        return json.loads(self("status", run, "--json", check=False).stdout)

    def wait(self, run: str = "latest", timeout: float = 240, poll: float = 0.5) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            st = self.status(run)
            if st["state"] == "FAILED":
                print(self.failure_logs(st))  # pytest shows a failing test's stdout: CI's output says why
            if st["state"] in ("COMPLETED", "FAILED"):
                return st
            time.sleep(poll)
        raise AssertionError(f"run {run} still {st['state']} after {timeout} s: {st}")

    @staticmethod
    def failure_logs(st: dict, per_stage: int = 2, tail: int = 3000) -> str:
        """The last `tail` characters of stdout and stderr of the first failed tasks of each failed stage."""
        out = [f"run {st['run']} FAILED:"]
        for stage in st["stages"]:
            for t in stage["failed"][:per_stage]:
                log = next((x["log"] for x in stage["array"] if x["task"] == t), None)
                if not log:
                    out.append(f"--- {stage['name']}[{t}]: no log (it never started)")
                for name, path in (log or {}).items():
                    text = Path(path).read_text(errors="replace")[-tail:] if Path(path).is_file() else "(missing)"
                    out.append(f"--- {stage['name']}[{t}] {name}: {path}\n{text}")
        return "\n".join(out)

    def run_dir(self, run: str = "latest") -> Path:
        runs = sorted((p for p in self.run_root.iterdir() if (p / "run.json").exists()),
                      key=lambda p: json.loads((p / "run.json").read_text())["created"])
        return runs[-1] if run == "latest" else self.run_root / run

    def ledger(self, run: str = "latest") -> list:
        path = self.run_dir(run) / "submissions.jsonl"
        return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def cli(tmp_path) -> CLI:
    root = tmp_path / "runs"
    root.mkdir()
    return CLI(root)


def stage_counts(status: dict) -> dict:
    return {s["name"]: s["tasks"] for s in status["stages"]}


def _dev_slurm_up(*args: str) -> dict:
    if os.geteuid() != 0:
        pytest.skip("the dev cluster needs root (apt-get install, slurm/munge/mariadb daemons)")
    if not (shutil.which("apt-get") or shutil.which("slurmctld")):
        pytest.skip("no apt-get to install Slurm and no Slurm installed")
    p = subprocess.run([str(ROOT / "scripts" / "dev-slurm"), "up", *args], capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        pytest.fail(f"scripts/dev-slurm up {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    line = next(x for x in p.stdout.splitlines() if x.startswith("export SLURM_CONF="))
    return {"SLURM_CONF": line.split("=", 1)[1].strip().strip("'\"")}


@pytest.fixture(scope="session")
def dev_slurm():
    return _dev_slurm_up()


@pytest.fixture(scope="session")
def dev_slurm_noacct():
    """The second dev cluster, without accounting (AccountingStorageType=none: sacct fails there);
    profile cluster=dev-noacct."""
    return _dev_slurm_up("--no-accounting")


def _dev_slurm_mn(*extra: str) -> dict:
    """`scripts/dev-slurm up --nodes 3 [extra]`: the multi-node cluster (labmn); skips with the script's
    reason where this machine cannot make namespaces (exit 4: not root, unprivileged container)."""
    if os.geteuid() != 0:
        pytest.skip("the multi-node dev cluster needs root (network/UTS/mount namespaces, a bridge)")
    p = subprocess.run([str(ROOT / "scripts" / "dev-slurm"), "up", "--nodes", "3", *extra], capture_output=True,
                       text=True, timeout=1800)
    if p.returncode == 4:
        pytest.skip(p.stderr.strip().splitlines()[-1])
    if p.returncode != 0:
        pytest.fail(f"scripts/dev-slurm up --nodes 3 {' '.join(extra)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    env = {}
    for line in p.stdout.splitlines():
        if line.startswith("export "):
            k, _, v = line[len("export "):].partition("=")
            env[k] = v.strip().strip("'\"")
    env["stderr"] = p.stderr
    return env


@pytest.fixture(scope="session")
def dev_slurm_mn() -> dict:
    """The multi-node dev cluster: {"SLURM_CONF": ...} (3 nodes mn1..mn3, profile cluster=dev-mn)."""
    env = _dev_slurm_mn()
    return {"SLURM_CONF": env["SLURM_CONF"]}


@pytest.fixture(scope="session")
def dev_slurm_mn_image() -> dict:
    """The multi-node dev cluster with pyxis + enroot and its image ({"SLURM_CONF", "DEV_SLURM_MN_IMAGE"});
    skips with the reason where the container part was skipped (no vendor archives, no packages)."""
    env = _dev_slurm_mn("--containers")
    if "DEV_SLURM_MN_IMAGE" not in env:
        why = [x for x in env["stderr"].splitlines() if "containers: skipped" in x]
        pytest.skip(why[-1] if why else "no container support on the multi-node dev cluster")
    return {k: env[k] for k in ("SLURM_CONF", "DEV_SLURM_MN_IMAGE")}


@pytest.fixture
def dcli(tmp_path, dev_slurm) -> CLI:
    root = tmp_path / "runs"
    root.mkdir()
    return CLI(root, env=dev_slurm)


def job_of(cli: CLI, stage: str) -> str:
    """The (first) Slurm job id of a stage of the latest run, from its submission ledger."""
    return next(r["job_id"] for r in cli.ledger() if r.get("stage") == stage and "job_id" in r)


def wait_for(predicate, timeout: float, what: str, poll: float = 1.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}")


def hub_cache_with(root: Path, repo: str = "org/tiny", commit: str = "0123abcd", ref: str = "main") -> Path:
    """A Hugging Face hub cache holding one repo (the layout snapshot_download writes), offline."""
    folder = root / f"models--{repo.replace('/', '--')}"
    (folder / "refs" / ref).parent.mkdir(parents=True)  # a ref with slashes (refs/pr/1) is nested folders
    (folder / "refs" / ref).write_text(commit)
    (folder / "snapshots" / commit).mkdir(parents=True)
    (folder / "snapshots" / commit / "config.json").write_text("{}")
    return root


def slurm(env, *argv) -> str:
    return subprocess.run(list(argv), env={**os.environ, **env}, capture_output=True, text=True, check=True,
                          timeout=60).stdout


def queued(env, root=None) -> set:
    """Job ids in the queue (array jobs once, however Slurm has split their tasks so far); with
    `root`, only jobs whose batch script lies under it (other users' jobs come and go meanwhile)."""
    out = slurm(env, "squeue", "-h", "-o", "%i|%o")
    return {line.split("|")[0].split("_")[0] for line in out.splitlines()
            if root is None or line.split("|", 1)[1].startswith(str(root))}


def wait_jobs_ended(cli: CLI, env, timeout: float = 120) -> None:
    """Until Slurm has recorded the end of every job the run submitted. A run is COMPLETED by its markers
    as soon as its last task writes one, while that job is still finishing (srun's step, the epilog): a
    test that then removes a marker and resumes must wait for this, or resume sees the task still running
    and has nothing to do (a CI run at b78dfc8 failed so: the marker went 0.25 s before the job's end)."""
    ids = {r["job_id"] for r in cli.ledger() if "job_id" in r}
    final = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL",
             "DEADLINE")

    def ended() -> bool:
        if queued(env, root=cli.run_root) & ids:
            return False
        states = slurm(env, "sacct", "-n", "-X", "-P", "-j", ",".join(sorted(ids)), "-o", "State").splitlines()
        return bool(states) and all(s.split()[0] in final for s in states if s.strip())

    wait_for(ended, timeout, "Slurm to record the end of the run's jobs", poll=0.5)


@pytest.fixture(scope="session")
def cpu_python() -> Path:
    """The stage environment of kind=preprocess (conf/envs/cpu.txt): built once, a no-op if it is."""
    p = subprocess.run([sys.executable, "-m", "launcher", "env", "build", "cpu"], capture_output=True, text=True,
                       timeout=1800)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return ROOT / ".envs" / "cpu" / "bin" / "python"


@pytest.fixture(scope="session")
def llamacpp_python() -> Path:
    """The llamacpp stage environment (conf/envs/llamacpp.txt; compiling llama.cpp takes ~5 min on 2
    cores, once): built once, a no-op if it is up to date."""
    p = subprocess.run([sys.executable, "-m", "launcher", "env", "build", "llamacpp"], capture_output=True,
                       text=True, timeout=3600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return ROOT / ".envs" / "llamacpp" / "bin" / "python"


@pytest.fixture(scope="session")
def gptq_python() -> Path:
    """The gptq stage environment (conf/envs/gptq.txt; pip only, ~1.5 min on 2 cores, once): built once,
    a no-op if it is up to date."""
    p = subprocess.run([sys.executable, "-m", "launcher", "env", "build", "gptq"], capture_output=True,
                       text=True, timeout=3600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return ROOT / ".envs" / "gptq" / "bin" / "python"


@pytest.fixture(scope="session")
def tokenized(cpu_python, tmp_path_factory) -> dict:
    """Tiny datatrove-tokenized folders and their tokenizer (tests/integration/hf_train_helper.py `data`,
    in the cpu stage environment), made once a session; tests read them, never write them."""
    out = tmp_path_factory.mktemp("hf-data") / "d"
    helper = ROOT / "tests" / "integration" / "hf_train_helper.py"
    p = subprocess.run([str(cpu_python), str(helper), "data", str(out)], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads((out / "data.json").read_text())
