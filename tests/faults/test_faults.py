"""Fault injection on the real dev cluster: each test ends by checking the outputs equal a fault-free
run's (the reducer's total over all shards), not just exit codes."""
import os
import subprocess
import time
from pathlib import Path

import pytest
from conftest import ROOT, slurm, stage_counts, wait_jobs_ended

from jobs import layout

pytestmark = pytest.mark.slurm

SLOW_SHARDS = "pipeline.stages.shards.command='sleep 6; echo $((LAUNCHER_TASK_INDEX + 1)) > $LAUNCHER_OUTPUT_DIR/value.txt'"


def total(cli) -> str:
    return (layout.output_dir(cli.run_dir(), "reduce", 0, 0) / "total.txt").read_text().strip()


def wait_running(env, job_id, index=None, timeout=60):
    """Until squeue shows the array task (or any task of the job) running."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        out = slurm(env, "squeue", "-h", "-t", "R", "-j", job_id, "-o", "%i")
        ids = out.split()
        if ids and (index is None or f"{job_id}_{index}" in ids):
            return
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} task {index} never ran")


def wait_started(cli, stage, n, timeout=60):
    """Until n tasks of the stage have started their runner (running marker) or finished."""
    markers = cli.run_dir() / "stages" / stage / "markers"
    deadline = time.time() + timeout
    while time.time() < deadline:
        started = {p.name.split(".")[0] for p in markers.glob("*/*") if ".running-" in p.name or p.suffix == ".done"}
        if len(started) >= n:
            return
        time.sleep(0.1)
    raise AssertionError(f"{stage}: fewer than {n} tasks started in {timeout} s")


def shards_job(cli) -> str:
    return next(r["job_id"] for r in cli.ledger() if r["stage"] == "shards")


def test_scancel_of_one_array_task_then_resume_reruns_only_it(dcli, dev_slurm):
    dcli("run", "pipeline=smoke", "cluster=dev", SLOW_SHARDS)
    job = shards_job(dcli)
    wait_running(dev_slurm, job, 1)
    slurm(dev_slurm, "scancel", f"{job}_1")
    st = dcli.wait(timeout=180)
    counts = stage_counts(st)
    assert st["state"] == "FAILED" and counts["shards"]["cancelled"] == 1 and counts["shards"]["completed"] == 3
    before = len(dcli.ledger())
    dcli("resume", "latest")
    assert [(r["stage"], r["tasks"]) for r in dcli.ledger()[before:]] == [
        ("shards", [1]), ("reduce", [0]), ("checkpointing", [0])]
    assert dcli.wait(timeout=180)["state"] == "COMPLETED" and total(dcli) == "10"


def test_sigkilled_task_leaves_no_marker_and_resume_redoes_it(dcli, dev_slurm):
    kill = ("pipeline.stages.shards.command='if [ $LAUNCHER_TASK_INDEX = 2 ] && [ ! -e $LAUNCHER_CHECKPOINT_DIR/k ]; "
            "then touch $LAUNCHER_CHECKPOINT_DIR/k; kill -9 $PPID; sleep 5; fi; "
            "echo $((LAUNCHER_TASK_INDEX + 1)) > $LAUNCHER_OUTPUT_DIR/value.txt'")
    dcli("run", "pipeline=smoke", "cluster=dev", kill)
    st = dcli.wait(timeout=180)
    assert st["state"] == "FAILED" and stage_counts(st)["shards"]["failed"] == 1
    markers = dcli.run_dir() / "stages" / "shards" / "markers"
    assert not list(markers.glob("*/2.done")) and not list(markers.glob("*/2.failed"))  # no chance to write them
    assert list(markers.glob("*/2.running-*"))  # stale; sacct's FAILED wins over it
    dcli("resume", "latest")
    assert dcli.wait(timeout=180)["state"] == "COMPLETED" and total(dcli) == "10"


def restart_daemon(name, signal="TERM"):
    lab = Path(os.environ.get("DEV_SLURM_DIR", "/var/tmp/launcher-dev-slurm"))
    pid = int((lab / "run" / f"{name}.pid").read_text().split()[0])
    subprocess.run(["kill", f"-{signal}", str(pid)], check=True)
    time.sleep(2)
    subprocess.run([str(ROOT / "scripts" / "dev-slurm"), "up"], capture_output=True, check=True, timeout=300)


@pytest.mark.slow
def test_slurmctld_restart_during_a_run(dcli, dev_slurm):
    dcli("run", "pipeline=smoke", "cluster=dev", SLOW_SHARDS)
    wait_running(dev_slurm, shards_job(dcli))
    restart_daemon("slurmctld")
    assert dcli.wait(timeout=300)["state"] == "COMPLETED" and total(dcli) == "10"


@pytest.mark.slow
def test_slurmd_killed_and_restarted_during_a_run(dcli, dev_slurm):
    """slurmd dies (SIGKILL) while tasks run; their slurmstepd keep going; slurmd comes back."""
    dcli("run", "pipeline=smoke", "cluster=dev", SLOW_SHARDS)
    wait_running(dev_slurm, shards_job(dcli))
    # squeue says RUNNING before srun has launched the step through slurmd: kill slurmd only once
    # every shard's task runner has started (its running marker), or a step launch fails outright.
    wait_started(dcli, "shards", 4)
    restart_daemon("slurmd", "KILL")
    assert dcli.wait(timeout=300)["state"] == "COMPLETED" and total(dcli) == "10"


@pytest.mark.slow
def test_node_down_mid_run_requeues_and_completes(dcli, dev_slurm):
    dcli("run", "pipeline=smoke", "cluster=dev", SLOW_SHARDS)
    wait_running(dev_slurm, shards_job(dcli))
    slurm(dev_slurm, "scontrol", "update", "nodename=localhost", "state=down", "reason=fault-test")
    time.sleep(5)
    # ReturnToService=2 may already have brought it back when slurmd re-registered: then this errors
    subprocess.run(["scontrol", "update", "nodename=localhost", "state=resume"], env={**os.environ, **dev_slurm},
                   capture_output=True)
    state = slurm(dev_slurm, "sinfo", "-h", "-n", "localhost", "-o", "%T").split()
    assert state and not any("down" in s or "drain" in s for s in state), state
    st = dcli.wait(timeout=300)
    if st["state"] == "FAILED":  # tasks Slurm could not requeue: resume finishes them
        dcli("resume", "latest")
        st = dcli.wait(timeout=300)
    assert st["state"] == "COMPLETED" and total(dcli) == "10"


def test_full_filesystem_fails_tasks_cleanly_and_resume_redoes_them(tmp_path, dev_slurm):
    """The run root is a 3 MB tmpfs; four shards write 1 MB each: some hit ENOSPC. They must fail
    without a completion marker or a partial output left in place; with room again, resume finishes."""
    import os as _os

    if _os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    from conftest import CLI

    root = tmp_path / "small"
    root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(root)], check=True)
    try:
        cli = CLI(root, env=dev_slurm)
        big = ("pipeline.stages.shards.command='head -c 1000000 /dev/zero > $LAUNCHER_OUTPUT_DIR/blob; "
               "echo $((LAUNCHER_TASK_INDEX + 1)) > $LAUNCHER_OUTPUT_DIR/value.txt'")
        cli("run", "pipeline=smoke", "cluster=dev", big)
        st = cli.wait(timeout=180)
        shards = stage_counts(st)["shards"]
        assert st["state"] == "FAILED" and shards["failed"] >= 1, st
        run_dir = cli.run_dir()
        done = {int(p.stem) for p in run_dir.glob("stages/shards/markers/*/*.done")}
        assert len(done) == shards["completed"]
        for t in range(4):  # a task without a marker has no output in place; one with a marker has all of it
            out = layout.output_dir(run_dir, "shards", 0, t)
            assert (out / "value.txt").exists() == (t in done)
        assert not list(run_dir.glob("stages/shards/out/0/.*partial*"))
        subprocess.run(["mount", "-o", "remount,size=64m", str(root)], check=True)
        cli("resume", "latest")
        assert cli.wait(timeout=180)["state"] == "COMPLETED" and total(cli) == "10"
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)


def test_launcher_sigkilled_between_stage_submissions_then_resume_submits_nothing_twice(dcli, dev_slurm, tmp_path):
    """A real SIGKILL of `launcher run` right after its 2nd sbatch (an sbatch shim kills its parent on
    the 3rd call): resume submits only the stages that never reached Slurm, and Slurm ends up with
    exactly one job per stage of the run, each task run once."""
    import shutil

    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "sbatch").write_text(f"""#!/bin/bash
n=$(( $(cat {tmp_path}/count 2>/dev/null || echo 0) + 1 )); echo $n > {tmp_path}/count
if [ "$n" = 3 ]; then kill -9 $PPID; exit 1; fi
exec {shutil.which("sbatch", path=os.environ["PATH"])} "$@"
""")
    (shim / "sbatch").chmod(0o755)
    from conftest import CLI

    dying = CLI(dcli.run_root, env={**dev_slurm, "PATH": f"{shim}:{os.environ['PATH']}"})
    p = dying("run", "pipeline=smoke", "cluster=dev", check=False)
    assert p.returncode == -9, (p.returncode, p.stderr)  # killed, no rollback
    assert [r["stage"] for r in dcli.ledger() if "job_id" in r] == ["shards", "reduce"]
    dcli("resume", "latest")
    assert [r["stage"] for r in dcli.ledger() if "job_id" in r] == ["shards", "reduce", "fanout", "checkpointing"]
    assert dcli.wait(timeout=180)["state"] == "COMPLETED" and total(dcli) == "10"
    run_id = dcli.run_dir().name
    out = slurm(dev_slurm, "sacct", "-n", "-P", "-X", "-D", "-S", "now-1hour", "-o", "JobName%80,State")
    mine = [line.split("|") for line in out.splitlines() if line.startswith(run_id + ".")]
    per_stage = {}
    for name, state in mine:
        per_stage.setdefault(name.split(".", 1)[1], []).append(state)
    assert {k: len(v) for k, v in per_stage.items()} == {"shards": 4, "reduce": 1, "fanout": 2, "checkpointing": 2}
    # checkpointing requeues itself once by design (force_requeue_at): a REQUEUED record, then COMPLETED
    assert all(s == "COMPLETED" for k, v in per_stage.items() if k != "checkpointing" for s in v), per_stage


def test_two_resumes_race_on_the_dev_cluster_and_exactly_one_submits(dcli, dev_slurm):
    dcli("run", "pipeline=smoke", "cluster=dev", "pipeline.vars.fail_once_task=1")
    assert dcli.wait(timeout=180)["state"] == "FAILED"
    before = len(dcli.ledger())
    import sys

    procs = [subprocess.Popen([sys.executable, "-m", "launcher", "resume", "latest"], cwd=dcli.run_root, env=dcli.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    new = dcli.ledger()[before:]
    assert len({r["batch"] for r in new}) == 1 and [r["stage"] for r in new if "job_id" in r] == [
        "shards", "reduce", "checkpointing"], (new, outs)
    assert sum("nothing to resume" in o for o, _ in outs) == 1
    assert dcli.wait(timeout=180)["state"] == "COMPLETED" and total(dcli) == "10"


def test_partial_and_corrupted_newest_checkpoints_are_skipped_on_resume(dcli, dev_slurm, cpu_python, tmp_path):
    """A training task dies after its last checkpoints were written badly: the newest has no completion
    marker (killed mid-save), the one before was damaged on disk (a truncated weights file). Resume
    trains again from the newest intact checkpoint and ends with the fault-free run's final loss."""
    import json

    data = tmp_path / "data"
    subprocess.run([str(cpu_python), str(ROOT / "tests" / "integration" / "hf_train_helper.py"), "data", str(data)],
                   check=True, capture_output=True, timeout=600)
    info = json.loads((data / "data.json").read_text())
    dcli("run", "pipeline=train", "cluster=dev", f"pipeline.vars.data={info['a']}",
         f"pipeline.vars.tokenizer={info['tokenizer']}", "pipeline.vars.tokens=65536",
         "pipeline.vars.checkpoint_every_tokens=16384", "~pipeline.stages.evaluate")  # 64 steps, every 16
    assert dcli.wait(timeout=300)["state"] == "COMPLETED"
    run = dcli.run_dir()
    out = layout.output_dir(run, "train", 0, 0)
    fault_free = json.loads((out / "result.json").read_text())
    assert fault_free["checkpoints"] == [16, 32, 48, 64]
    wait_jobs_ended(dcli, dev_slurm)  # the task has died: its job is over before the damage is found

    h = json.loads((run / "plan.json").read_text())["stages"][0]["hash"]
    layout.marker_path(run, "train", h, 0).unlink()  # the task never finished
    ckpt = layout.checkpoint_dir(run, "train", 0)
    (ckpt / "checkpoint-64" / "launcher-complete.json").unlink()  # killed while saving
    weights = ckpt / "checkpoint-48" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # damaged on disk
    dcli("resume", "latest")
    assert dcli.wait(timeout=300)["state"] == "COMPLETED"
    again = json.loads((out / "result.json").read_text())
    assert again["resumed_from"] == 32
    assert again["final_step"] == 64 and again["final_loss"] == pytest.approx(fault_free["final_loss"], abs=1e-6)
    aside = sorted(p.name.split(".")[0] for p in ckpt.glob("checkpoint-*.partial-*"))
    assert aside == ["checkpoint-48", "checkpoint-64"]
    log = "".join(p.read_text() for p in (run / "stages" / "train" / "logs").glob("*.err"))
    assert "checkpoint-48 does not match the file sizes its marker recorded (corrupted)" in log
