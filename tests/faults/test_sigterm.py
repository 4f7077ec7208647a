"""A SIGTERM without the stop signal: `scontrol requeue`, requeue-mode preemption (QOS lowprio,
preempted by QOS urgent after a 20 s GraceTime on the dev cluster), scancel, and on the local
backend `launcher cancel`. Each counter of pipeline=requeue checkpoints only every SAVE_EVERY
counts, so a task that does not checkpoint on SIGTERM resumes from an interval checkpoint below
the count it had reached; one that does resumes from the count it reached (± the steps taken
while the signal travels)."""
import json
import re
import time

import pytest
from conftest import job_of, slurm, stage_counts

from jobs import layout

STEP_S, SAVE_EVERY, TARGET = 0.25, 10, 24
INTERRUPT_AT = 11  # just past an interval checkpoint (10)
SLACK = 8  # counts (2 s) the work may advance after the interrupting command returned, before its SIGTERM
COUNTERS = ("python_counter", "command_counter")


def requeue_pipeline(cluster: str, *extra: str, target: int = TARGET) -> list:
    return ["pipeline=requeue", f"cluster={cluster}", "pipeline.vars.force_at=-1", f"pipeline.vars.step_s={STEP_S}",
            f"pipeline.vars.target={target}", f"pipeline.vars.save_every={SAVE_EVERY}", *extra]


def progress(run, stage: str) -> int:
    """The count the stage's task has reached (not its checkpoint)."""
    ckpt = layout.checkpoint_dir(run, stage, 0)
    try:
        if stage == "python_counter":
            return int(json.loads((ckpt / "progress.json").read_text())["count"])
        return int((ckpt / "progress").read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def wait_progress(run, stage: str, at_least: int, timeout: float = 60) -> int:
    deadline = time.time() + timeout
    while time.time() < deadline:
        n = progress(run, stage)
        if n >= at_least:
            return n
        time.sleep(0.05)
    raise AssertionError(f"{stage} never counted to {at_least}")


def interrupt(run, stages, command) -> dict:
    """Run `command` once every stage has counted to INTERRUPT_AT: each stage's count just before
    and just after it (what the work reached when the SIGTERM came lies in between, + SLACK)."""
    for stage in stages:
        wait_progress(run, stage, INTERRUPT_AT)
    report = {stage: {"reached": progress(run, stage)} for stage in stages}
    command()
    for stage in stages:
        report[stage]["after"] = progress(run, stage)
    return report


def check_resumed(report: dict, stage: str, value: int, slack: int = SLACK) -> None:
    r = report[stage]
    assert r["reached"] <= value <= r["after"] + slack, (stage, value, report)


def starts(run, stage: str) -> list:
    """The count each attempt started from."""
    if stage == "python_counter":
        state = layout.read_json(layout.checkpoint_dir(run, stage, 0) / "state.json", {})
        return [a["from"] for a in state.get("attempts", [])]
    path = layout.checkpoint_dir(run, stage, 0) / "starts"
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def saved_on_stop(cli, stage: str) -> list:
    """The counts the stage saved when asked to stop (not at an interval), from its own record."""
    if stage == "python_counter":
        state = layout.read_json(layout.checkpoint_dir(cli.run_dir(), stage, 0) / "state.json", {})
        return [a["stopped_at"] for a in state.get("attempts", []) if "stopped_at" in a]
    return [int(n) for n in re.findall(r"^SIGTERM at (\d+): saved", cli("logs", "latest", stage).stdout, re.M)]


def saved(run, stage: str) -> int:
    ckpt = layout.checkpoint_dir(run, stage, 0)
    if stage == "python_counter":
        return layout.read_json(ckpt / "state.json", {})["count"]
    return int((ckpt / "count").read_text())


def sacct_states(env, job: str) -> list:
    """Every record of the array task (-D: also the attempts before a requeue), oldest first."""
    out = slurm(env, "sacct", "-X", "-D", "-n", "-P", "-o", "JobID,State", "-j", job)
    return [line.split("|")[1].split()[0] for line in out.splitlines() if line.split("|")[0] == job]


def settled_states(env, job: str, timeout: float = 30) -> list:
    deadline = time.time() + timeout
    while True:
        states = sacct_states(env, job)
        if time.time() > deadline or (states and states[-1] not in ("PENDING", "RUNNING", "REQUEUED", "COMPLETING")):
            return states
        time.sleep(1)


def launcher_lines(log: str) -> str:
    """The runner's own lines (Slurm's slurmstepd says CANCELLED ... DUE TO JOB REQUEUE by itself)."""
    return "\n".join(line for line in log.splitlines() if line.startswith("[launcher"))


def measured(report: dict) -> str:
    return ", ".join(f"{s}: reached {r['reached']}-{r['after']}, resumed from {r.get('resumed')}"
                     for s, r in report.items())


@pytest.mark.slurm
@pytest.mark.slow
def test_scontrol_requeue_resumes_from_the_step_reached(dcli, dev_slurm):
    """Fault #15.7: `scontrol requeue <job>_<idx>` of a running python stage (and a command stage):
    the next attempt starts from the count the task reached, not from its interval checkpoint."""
    dcli("run", *requeue_pipeline("dev"))
    run, report = dcli.run_dir(), {}
    for stage in COUNTERS:
        job = f"{job_of(dcli, stage)}_0"
        report.update(interrupt(run, [stage], lambda: slurm(dev_slurm, "scontrol", "requeue", job)))
    st = dcli.wait(timeout=90)
    for stage in COUNTERS:
        report[stage]["resumed"] = starts(run, stage)[-1]
    print("measured:", measured(report))
    assert st["state"] == "COMPLETED", st
    for stage in COUNTERS:
        assert len(starts(run, stage)) == 2, (stage, starts(run, stage))
        check_resumed(report, stage, report[stage]["resumed"])
        assert saved_on_stop(dcli, stage) == [report[stage]["resumed"]], stage  # the checkpoint the SIGTERM asked for
        assert layout.output_dir(run, stage, 0, 0).joinpath("count.txt").read_text().strip() == str(TARGET)
    # Slurm requeued it once; the task did not requeue it again (SLURM_RESTART_COUNT of attempt 2)
    assert layout.output_dir(run, "command_counter", 0, 0).joinpath("restarts.txt").read_text().strip() == "1"
    log = launcher_lines(dcli("logs", "latest", "python_counter").stderr)
    assert "SIGTERM" in log and "Slurm is requeueing this task" in log and "cancelled" not in log, log


@pytest.mark.slurm
@pytest.mark.slow
def test_preemption_requeues_and_resumes_from_the_step_reached(dcli, dev_slurm):
    """Fault #15.7: a real requeue-mode preemption (QOS lowprio preempted by QOS urgent, GraceTime 20 s):
    SIGTERM while the job is still RUNNING; the task checkpoints and requeues itself within the grace,
    so Slurm does not record it FAILED, and the next attempt starts from the count it reached."""
    victim = [f"pipeline.stages.{s}.resources.{k}" for s in COUNTERS for k in ("qos=lowprio", "gpus_per_node=1")]
    dcli("run", *requeue_pipeline("dev", *victim, target=48))  # the preemption takes a few seconds to come
    run, urgent = dcli.run_dir(), []
    # all 4 fake GPUs: only preempting both victims (1 GPU each) lets it start
    report = interrupt(run, COUNTERS, lambda: urgent.append(slurm(
        dev_slurm, "sbatch", "--parsable", "--qos=urgent", "--gres=gpu:4", "-t", "1", "-o", "/dev/null",
        "--job-name", f"{run.name}.urgent", "--wrap", "sleep 1").strip().split(";")[0]))
    try:
        st = dcli.wait(timeout=120)
    finally:
        slurm(dev_slurm, "scancel", *urgent)
    for stage in COUNTERS:
        report[stage]["resumed"] = starts(run, stage)[-1]
    print("measured:", measured(report))
    assert st["state"] == "COMPLETED", st
    for stage in COUNTERS:
        assert len(starts(run, stage)) == 2, (stage, starts(run, stage))
        # the SIGTERM comes a scheduling cycle (sched_interval=2 s, ≤ ~4 s) after the urgent job is queued
        check_resumed(report, stage, report[stage]["resumed"], slack=20)
        assert saved_on_stop(dcli, stage) == [report[stage]["resumed"]], stage
        states = settled_states(dev_slurm, f"{job_of(dcli, stage)}_0")
        assert "FAILED" not in states and states[-1] == "COMPLETED", (stage, states)
    log = launcher_lines(dcli("logs", "latest", "python_counter").stderr)
    assert "SIGTERM" in log and "preemption" in log and "scontrol requeue" in log and "cancelled" not in log, log


@pytest.mark.slurm
@pytest.mark.slow
def test_scancel_ends_cancelled_with_a_checkpoint_and_no_requeue(dcli, dev_slurm):
    """Sibling: scancel brings the same SIGTERM (job COMPLETING). The task checkpoints but must not
    requeue itself (`scontrol requeue` of a cancelled, COMPLETING job succeeds and would bring it
    back), writes no completion marker, and resume continues from the count it reached."""
    dcli("run", *requeue_pipeline("dev"))
    run, report = dcli.run_dir(), {}
    for stage in COUNTERS:
        report.update(interrupt(run, [stage], lambda: slurm(dev_slurm, "scancel", job_of(dcli, stage))))
    st = dcli.wait(timeout=60)
    counts = stage_counts(st)
    assert st["state"] == "FAILED" and all(counts[s]["cancelled"] == 1 for s in COUNTERS), st
    for stage in COUNTERS:
        assert settled_states(dev_slurm, f"{job_of(dcli, stage)}_0") == ["CANCELLED"], stage
        assert not list((run / "stages" / stage / "markers").glob("*/0.done")), stage
        assert len(starts(run, stage)) == 1, (stage, starts(run, stage))
        check_resumed(report, stage, saved(run, stage))
        assert saved_on_stop(dcli, stage) == [saved(run, stage)], stage
    log = launcher_lines(dcli("logs", "latest", "python_counter").stderr)
    assert "SIGTERM" in log and "Slurm is ending this task" in log and "scontrol requeue" not in log, log
    dcli("resume", "latest")
    assert dcli.wait(timeout=90)["state"] == "COMPLETED"
    for stage in COUNTERS:
        report[stage]["resumed"] = starts(run, stage)[-1]
        check_resumed(report, stage, report[stage]["resumed"])
    print("measured:", measured(report))


@pytest.mark.slow
def test_local_cancel_checkpoints_and_counts_as_cancelled(cli):
    """The local backend: `launcher cancel` sends SIGTERM to the task's process group (its SIGTERM
    means: the local scheduler is ending this task). The work checkpoints within the grace, the task
    is cancelled (not requeued, no marker), and resume continues from the count it reached."""
    cli("run", *requeue_pipeline("local"))
    run = cli.run_dir()
    report = interrupt(run, COUNTERS, lambda: cli("cancel", "latest"))
    st = cli.wait(timeout=30)
    assert st["state"] == "FAILED" and all(stage_counts(st)[s]["cancelled"] == 1 for s in COUNTERS), st
    for stage in COUNTERS:
        assert not list((run / "stages" / stage / "markers").glob("*/0.done")), stage
        assert len(starts(run, stage)) == 1, (stage, starts(run, stage))
        check_resumed(report, stage, saved(run, stage))
        assert saved_on_stop(cli, stage) == [saved(run, stage)], stage
    assert "the local scheduler is ending this task" in cli("logs", "latest", "python_counter").stderr
    cli("resume", "latest")
    assert cli.wait(timeout=60)["state"] == "COMPLETED"
    for stage in COUNTERS:
        report[stage]["resumed"] = starts(run, stage)[-1]
        check_resumed(report, stage, report[stage]["resumed"])
    print("measured:", measured(report))
