"""A user's Hydra app (tests/integration/hydra_app: train.py and its conf/) end to end: a 4-point
multirun through the Hydra launcher plugin (`hydra/launcher=launcher_slurm`: one array job, returns at
once, `launcher status|logs|resume|cancel` know the run, each point's .hydra/overrides.yaml, a forced requeue
continues), on cluster=local and on the dev cluster; `launcher cancel` of such a run; and as a
`kind: hydra_app` stage after a command stage (conf/pipeline/hydra_app.yaml) and after a datatrove
preprocess stage of the demo corpus (cluster=local and the dev cluster). Unit tests: tests/unit/test_hydra_app_plan.py."""
from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml
from conftest import CLI, wait_for

from jobs import layout
from jobs.demo.corpus import make_corpus

APP_DIR = Path(__file__).resolve().parent / "hydra_app"
APP = APP_DIR / "train.py"
# Hydra's basic sweeper: the first key outermost; job number = index
POINTS = [["lr=0.1", "model=a"], ["lr=0.1", "model=b"], ["lr=0.01", "model=a"], ["lr=0.01", "model=b"]]
# A data stage (datatrove: read the demo corpus, write it uncompressed), then the app, which reads the
# stage's output file through {input:clean}: the stage's datatrove output folder, filled in on the node
# ($LAUNCHER_INPUT_CLEAN is stages/clean/out/<point>/, which holds datatrove's stats, not the data).
APP_AFTER_DATA = r"""
defaults:
  - schema
  - _self_
name: appdata
vars: {app_dir: null, corpus: null}
code: ["${pipeline.vars.app_dir}"]
stages:
  clean:
    kind: preprocess
    tasks: 1
    resources: {time: "00:10:00", cpus_per_task: 1, mem_gb: 1}
    blocks:
      - {_target_: datatrove.pipeline.readers.JsonlReader, data_folder: "${pipeline.vars.corpus}", glob_pattern: "*.jsonl.gz"}
      - {_target_: datatrove.pipeline.writers.JsonlWriter, output_folder: "{output}", compression: null}
  train:
    kind: hydra_app
    after: {clean: afterok}
    hydra_app:
      app: ${pipeline.vars.app_dir}/train.py
      overrides:
        - data_from='{input:clean}/00000.jsonl'
"""


def multirun(cli: CLI, tmp_path: Path, cluster: str, *extra: str, check: bool = True,
             sweep=("lr=0.1,0.01", "model=a,b")) -> subprocess.CompletedProcess:
    """`python train.py -m hydra/launcher=launcher_slurm lr=0.1,0.01 model=a,b ...` from tmp_path/work."""
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    p = subprocess.run([sys.executable, str(APP), "-m", "hydra/launcher=launcher_slurm", *sweep,
                        f"hydra.launcher.cluster={cluster}", f"hydra.launcher.run_root={cli.run_root}",
                        f"hydra.sweep.dir={tmp_path / 'multirun'}", *extra],
                       cwd=work, env=cli.env, capture_output=True, text=True, timeout=300)
    if check:
        assert p.returncode == 0, p.stdout + p.stderr
    return p


def run_id_of(p: subprocess.CompletedProcess) -> str:
    return re.search(r"launcher_slurm: run (\S+) ", p.stdout).group(1)


def check_points(cli: CLI, tmp_path: Path, run_id: str, steps: int) -> list:
    """Every point's folder: Hydra's own files with that point's overrides, the app's result; returns
    each point's attempts (the count each attempt started from)."""
    attempts = []
    for num, point in enumerate(POINTS):
        out = tmp_path / "multirun" / str(num)
        assert yaml.safe_load((out / ".hydra" / "overrides.yaml").read_text()) == [*point, f"steps={steps}",
                                                                                      "force_requeue_at=2"]
        assert (out / ".hydra" / "config.yaml").exists() and (out / ".hydra" / "hydra.yaml").exists()
        result = json.loads((out / "result.json").read_text())
        lr, model = (p.split("=")[1] for p in point)
        assert (result["lr"], result["model"], result["count"]) == (float(lr), model, steps)
        assert (result["job_num"], result["tag"], result["output_dir"]) == (num, f"train-{num}", str(out))
        assert result["sweep_dir"] == str(tmp_path / "multirun") and result["cwd"] == str(tmp_path / "work")
        assert result["app"] == str(cli.run_root / run_id / "code" / "hydra_app" / "train.py")  # the snapshot
        # the task function's return value, through a Hydra callback, in the task's own result.json
        task_result = json.loads((layout.output_dir(cli.run_root / run_id, "train", num, 0) / "result.json").read_text())
        assert task_result["return_value"] == {"count": steps, "lr": float(lr)}, task_result
        attempts.append([int(x) for x in (out / "attempts.txt").read_text().split()])
    return attempts


def test_a_multirun_through_the_plugin_is_one_detached_array_on_local(cli, tmp_path):
    t0 = time.time()
    p = multirun(cli, tmp_path, "local", "steps=8", "force_requeue_at=2")
    took = time.time() - t0
    run_id = run_id_of(p)
    assert took < 60, f"the multirun took {took:.1f} s to return"  # detached: it does not wait for the jobs
    assert (cli.run_root / run_id / "run.json").exists() and (tmp_path / "multirun" / "multirun.yaml").exists()
    assert [r["stage"] for r in cli.ledger(run_id)] == ["train"]  # one array job
    assert cli.ledger(run_id)[0]["tasks"] == [0, 1, 2, 3]
    st = cli.wait(run_id, timeout=240)
    assert st["state"] == "COMPLETED" and st["stages"][0]["tasks"]["completed"] == 4, st
    attempts = check_points(cli, tmp_path, run_id, steps=8)
    # each point's first attempt sent the stop signal at 2: saved, requeued, continued from its count
    assert all(len(a) == 2 and a[0] == 0 and a[1] >= 2 for a in attempts), attempts
    log = cli("logs", run_id, "train", "--task", "1")
    assert "caught SIGUSR2" in log.stderr + log.stdout and "requeue 1/3" in log.stderr + log.stdout
    meta = json.loads((cli.run_root / run_id / "run.json").read_text())
    assert meta["origin"]["app"] == str(APP) and meta["points"] == [[*p, "steps=8", "force_requeue_at=2"]
                                                                    for p in POINTS]
    assert "nothing to resume" in cli("resume", run_id).stdout  # from the configs it recorded


def test_a_config_group_that_changes_the_resources_splits_the_array_by_resource_set(cli, tmp_path):
    """model=big sets hydra.launcher.time (conf/model/big.yaml): each resource set is its own array job."""
    work = tmp_path / "work"
    work.mkdir()
    p = subprocess.run([sys.executable, str(APP), "-m", "hydra/launcher=launcher_slurm", "model=a,big",
                        "hydra.launcher.cluster=local", f"hydra.launcher.run_root={cli.run_root}",
                        f"hydra.sweep.dir={tmp_path / 'multirun'}"],
                       cwd=work, env=cli.env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    run_id = run_id_of(p)
    jobs = cli.ledger(run_id)
    assert [r["tasks"] for r in jobs] == [[0], [1]]
    assert ["--time=10" in Path(r["script"]).read_text() for r in jobs] == [True, False]
    assert "--time=20" in Path(jobs[1]["script"]).read_text()
    assert cli.wait(run_id)["state"] == "COMPLETED"
    assert json.loads((tmp_path / "multirun" / "1" / "result.json").read_text())["model"] == "big"


def test_resume_reruns_a_failed_point_of_a_plugin_run_from_its_recorded_configs(cli, tmp_path):
    run_id = run_id_of(multirun(cli, tmp_path, "local", sweep=("fail_once=false,true",)))
    st = cli.wait(run_id)
    assert st["state"] == "FAILED" and st["stages"][0]["tasks"]["failed"] == 1, st
    assert "resubmitting 1 task(s) [1]" in cli("resume", run_id).stdout
    assert cli.wait(run_id)["state"] == "COMPLETED"
    assert [r["tasks"] for r in cli.ledger(run_id)] == [[0, 1], [1]]
    assert (tmp_path / "multirun" / "1" / "attempts.txt").read_text().split() == ["0", "0"]


def processes_under(folder: Path) -> list:
    """(pid, command line) of every process of this machine whose command line names `folder`: a task
    (`jobs.task <run>/stages/...`) or the app it started (`<run>/code/hydra_app/train.py`)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if proc.name.isdigit() and str(folder) in cmd:
            found.append((int(proc.name), cmd))
    return found


def test_cancel_stops_a_plugin_run_and_leaves_no_task_process(cli, tmp_path):
    """`launcher cancel <id>` with the id the plugin printed: the running points are stopped (their
    apps too, not only the task wrappers) and the ones still queued never start."""
    run_id = run_id_of(multirun(cli, tmp_path, "local", "steps=3000", "step_s=0.1"))  # 5 min per point
    run_dir = cli.run_root / run_id
    wait_for(lambda: cli.status(run_id)["stages"][0]["tasks"].get("running", 0) > 0, 60, "a running point", poll=0.3)
    wait_for(lambda: any("train.py" in c for _, c in processes_under(run_dir)), 30, "the app's process", poll=0.3)
    assert "cancelled 1 job(s)" in cli("cancel", run_id).stdout
    st = cli.wait(run_id, timeout=60, poll=0.3)
    assert st["state"] == "FAILED" and st["stages"][0]["tasks"].get("cancelled") == 4, st
    table = cli("status", run_id, check=False)  # exit 1: the run did not complete
    assert table.returncode == 1 and "cancelled" in table.stdout.splitlines()[1], table.stdout
    wait_for(lambda: not processes_under(run_dir), 10, "no process of the run", poll=0.3)
    assert not any((tmp_path / "multirun" / str(n) / "result.json").exists() for n in range(4))


def test_a_multirun_started_with_python_m_runs_the_snapshot_of_the_package(cli, tmp_path):
    """`python -m hydra_app.train -m hydra/launcher=launcher_slurm ...` from a folder that holds the package:
    the tasks run `python -m` from the run's snapshot (jobs/runtime/run_module.py), not from that folder."""
    import shutil

    src = tmp_path / "src"
    shutil.copytree(APP_DIR, src / "hydra_app")
    (src / "hydra_app" / "__init__.py").write_text("")
    p = subprocess.run([sys.executable, "-m", "hydra_app.train", "-m", "hydra/launcher=launcher_slurm", "lr=0.1,0.01",
                        "model=a", "steps=2", "hydra.launcher.cluster=local", f"hydra.launcher.run_root={cli.run_root}",
                        f"hydra.sweep.dir={tmp_path / 'multirun'}"],
                       cwd=src, env=cli.env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    run_id = run_id_of(p)
    st = cli.wait(run_id, timeout=240)
    assert st["state"] == "COMPLETED", st
    run_dir = cli.run_root / run_id
    (src / "hydra_app" / "train.py").unlink()  # resume would need the snapshot only
    for num, lr in enumerate([0.1, 0.01]):
        result = json.loads((tmp_path / "multirun" / str(num) / "result.json").read_text())
        assert result["app"] == str(run_dir / "code" / "hydra_app" / "train.py") and result["cwd"] == str(src)
        task = json.loads((layout.output_dir(run_dir, "train", num, 0) / "result.json").read_text())
        assert task["return_value"] == {"count": 2, "lr": lr}, task
    assert json.loads((run_dir / "run.json").read_text())["origin"]["app"] == "hydra_app.train"


def test_the_plugin_says_what_is_wrong_in_hydra_launcher_terms(cli, tmp_path):
    p = multirun(cli, tmp_path, "local", "hydra.launcher.timeout_min=5", "hydra.launcher.time=00:05:00",
                 "hydra.launcher.cpus_per_task=0", "hydra.launcher.requeue.max=-1", check=False)
    assert p.returncode != 0
    err = p.stdout + p.stderr
    assert "hydra.launcher.time: sets resources.time as hydra.launcher.timeout_min does" in err \
        or "hydra.launcher.timeout_min: sets resources.time as hydra.launcher.time does" in err, err
    assert "hydra.launcher.cpus_per_task: must be >= 1" in err and "hydra.launcher.requeue.max: must be >= 0" in err
    assert list(cli.run_root.iterdir()) == []  # nothing written, nothing submitted
    p = multirun(cli, tmp_path, "nope", check=False)
    assert p.returncode != 0 and "hydra.launcher.cluster: no cluster profile 'nope'" in p.stdout + p.stderr


def test_a_hydra_app_stage_after_a_command_stage_on_local(cli):
    cli("run", "-m", "pipeline=hydra_app", "cluster=local", f"pipeline.vars.app_dir={APP_DIR}",
        "pipeline.vars.lr=0.1,0.01", "pipeline.vars.model=b", "wait=true", "poll_s=0.3")
    run_dir = cli.run_dir()
    assert cli.status()["state"] == "COMPLETED"
    for point, lr in enumerate(["0.1", "0.01"]):
        out = layout.output_dir(run_dir, "train", point)  # the app's Hydra output folder: the point's
        assert yaml.safe_load((out / ".hydra" / "overrides.yaml").read_text()) == [
            f"lr={lr}", "model=b", "data_from=${oc.env:LAUNCHER_INPUT_MAKE}/0/data.txt"]
        result = json.loads((out / "result.json").read_text())
        assert (result["lr"], result["model"], result["data"]) == (float(lr), "b", "made by make")
        assert (result["job_num"], result["tag"], result["cwd"]) == (point, f"train-{point}", str(run_dir / "code"))
        assert result["app"] == str(run_dir / "code" / "hydra_app" / "train.py")
        task = json.loads((out / "0" / "result.json").read_text())  # the task's own output
        assert task["hydra_run_dir"] == str(out)


def app_after_data(tmp_path: Path) -> list:
    """The arguments of `launcher run` for APP_AFTER_DATA over a 12-document demo corpus of tmp_path."""
    corpus, conf = tmp_path / "corpus", tmp_path / "conf" / "pipeline"
    make_corpus(corpus, docs=12, shards=1, seed=0)
    conf.mkdir(parents=True)
    (conf / "appdata.yaml").write_text(APP_AFTER_DATA)
    return ["--config-dir", str(conf.parent), "pipeline=appdata", f"pipeline.vars.app_dir={APP_DIR}",
            f"pipeline.vars.corpus={corpus}"]


def check_the_app_read_the_data_stage(run_dir: Path, tmp_path: Path) -> None:
    plan = json.loads((run_dir / "plan.json").read_text())
    output = layout.datatrove_dir(run_dir, "clean", next(s["hash"] for s in plan["stages"] if s["name"] == "clean"),
                                  0, "output")
    out = layout.output_dir(run_dir, "train", 0)
    assert yaml.safe_load((out / ".hydra" / "overrides.yaml").read_text()) == [f"data_from='{output}/00000.jsonl'"]
    result = json.loads((out / "result.json").read_text())
    corpus = [json.loads(line)["id"] for f in (tmp_path / "corpus").glob("*.jsonl.gz") for line in gzip.open(f, "rt")]
    read = [json.loads(line)["id"] for line in result["data"].splitlines()]
    assert len(corpus) == 12 and sorted(read) == sorted(corpus)  # every document the data stage wrote


def test_a_hydra_app_stage_after_a_data_stage_on_local(cli, tmp_path, cpu_python):
    cli("run", *app_after_data(tmp_path), "cluster=local", "wait=true", "poll_s=0.3")
    assert cli.status()["state"] == "COMPLETED"
    assert [r["stage"] for r in cli.ledger()] == ["clean", "train"]
    check_the_app_read_the_data_stage(cli.run_dir(), tmp_path)


def test_a_multirun_through_the_plugin_on_the_dev_cluster(dcli, tmp_path):
    """The issue's acceptance: one sbatch, back in under 5 s, all 4 complete with their overrides, and
    the forced requeue (the app sends its task the stop signal: scontrol requeue) continues."""
    t0 = time.time()
    p = multirun(dcli, tmp_path, "dev", "steps=8", "force_requeue_at=2")
    took = time.time() - t0
    run_id = run_id_of(p)
    assert took < 5, f"the multirun took {took:.1f} s to return"
    assert [r["stage"] for r in dcli.ledger(run_id)] == ["train"] and dcli.ledger(run_id)[0]["tasks"] == [0, 1, 2, 3]
    st = dcli.wait(run_id, timeout=600, poll=2)
    assert st["state"] == "COMPLETED" and st["stages"][0]["tasks"]["completed"] == 4, st
    attempts = check_points(dcli, tmp_path, run_id, steps=8)
    assert all(len(a) == 2 and a[0] == 0 and a[1] >= 2 for a in attempts), attempts
    log = dcli("logs", run_id, "train", "--task", "2")
    assert "scontrol requeue" in log.stdout + log.stderr


def test_a_hydra_app_stage_after_a_data_stage_on_the_dev_cluster(dcli, tmp_path, cpu_python):
    dcli("run", *app_after_data(tmp_path), "cluster=dev")
    st = dcli.wait(timeout=300, poll=1)
    assert st["state"] == "COMPLETED", st
    assert [r["stage"] for r in dcli.ledger()] == ["clean", "train"]  # two sbatch, chained
    check_the_app_read_the_data_stage(dcli.run_dir(), tmp_path)
