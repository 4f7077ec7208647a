"""The ledger never lies: edge cases of Slurm clients' output, of lost jobs, of skipped tasks and of log
path patterns (fake clients on PATH and fake scheduler answers: the edge cases mocks are for). The
end-to-end cases run against the dev cluster in tests/integration/test_ledger_*.py."""
import json
import os
import time
from pathlib import Path

import pytest

from jobs import layout
from launcher.config.compose import compose
from launcher.errors import LauncherError, SubmissionError
from launcher.plan.model import build_plan
from launcher.sbatch.lognames import expand_pattern, filename_pattern, log_stem, unsafe_path_reason
from launcher.run.rundir import Run
from launcher.slurm.accounting import parse_associations, parse_sacct, parse_squeue
from launcher.slurm.client import Slurm, parse_sbatch
from launcher.slurm.facts import parse_cluster_info
from launcher.run.status import collect
from fake_slurm import calls, fake_clients

BANNER = "*** lab_cluster | account balance: 1234.5 GPU_h | maintenance 2026-12-01 ***"


# ----------------------------------------------------------------------------- client output

@pytest.mark.parametrize("out,job", [
    ("4242\n", "4242"),
    ("4242;lab\n", "4242"),
    ("Submitting to account lab (balance 1234.5 GPU-h)\n4242\n", "4242"),  # a notice before: the listed case
    ("\n4242\n\n", "4242"),
    ("4242\nRemaining balance: 1233.9 GPU-h\n", None),  # a notice after: found by squeue instead
    ("Submitted batch job 4242\n", None),  # not --parsable output
    ("", None),
])
def test_sbatch_parsable_answer_is_the_last_line(out, job):
    assert parse_sbatch(out) == job


def test_sacct_and_squeue_banners_are_not_jobs():
    text = "\n".join([BANNER, "12_0|COMPLETED", "12_[1-2%2]|PENDING", "notice: 7_1|COMPLETED is an example",
                      "13_0|CANCELLED by 0", "99|COMPLETED", BANNER])
    assert parse_sacct(text) == {"12": {0: "completed", 1: "pending", 2: "pending"}, "13": {0: "cancelled"}}
    assert parse_squeue("\n".join([BANNER, "20_0|RUNNING", "20_1|PENDING", "20_2|COMPLETED"])) == {
        "20": {0: "running", 1: "pending", 2: "completed"}}


def test_sacctmgr_and_scontrol_banners_are_ignored():
    assert parse_associations(f"{BANNER}\nroot|lowprio,normal\nWelcome!\nlab|\n") == (
        {"root", "lab"}, {"lowprio", "normal"})
    config = f"{BANNER}\nMaxArraySize            = 1001\nAccountingStorageType   = accounting_storage/none\n"
    partitions = f"{BANNER}\nPartitionName=debug Default=YES MaxNodes=UNLIMITED MaxTime=04:00:00 Nodes=n1 State=UP\n"
    nodes = "Node list follows: NodeName=is-not-a-node\nNodeName=n1 CPUTot=16 RealMemory=1000 Partitions=debug State=IDLE\n"
    info = parse_cluster_info(config, partitions, nodes)
    assert list(info.partitions) == ["debug"] and [n.name for n in info.partitions["debug"].nodes] == ["n1"]
    assert info.accounting is False


def test_no_accounting_status_is_one_squeue_call(tmp_path, monkeypatch):
    s = fake_clients(tmp_path, monkeypatch,
                     sacct='echo "Slurm accounting storage is disabled" >&2; exit 1',
                     squeue='echo "5_0|COMPLETED"; echo "5_1|RUNNING"')
    assert s.query(["5"]) == {"5": {0: "completed", 1: "running"}}
    assert s.accounting is False and s.query(["5"])  # remembered: the next status asks squeue only
    assert [c.split()[0] for c in calls(tmp_path)] == ["sacct", "squeue", "squeue"]
    assert Slurm({"name": "x"}, accounting=False).query(["5"]) and calls(tmp_path)[-1].startswith("squeue")


def test_jobs_sacct_does_not_know_are_asked_of_squeue_only_once_settled(tmp_path, monkeypatch):
    s = fake_clients(tmp_path, monkeypatch, sacct='echo "5_0|COMPLETED"',
                     squeue='echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1')
    assert s.query(["5", "6"]) == {"5": {0: "completed"}}  # 6 is fresh: no second call
    assert [c.split()[0] for c in calls(tmp_path)] == ["sacct"]
    assert s.query(["5", "6"], settled=["6"]) == {"5": {0: "completed"}}  # squeue knows none of them: {}
    assert [c.split()[0] for c in calls(tmp_path)] == ["sacct", "sacct", "squeue"]
    assert "-j 6" in calls(tmp_path)[-1]


def test_status_queries_are_retried_sbatch_never(tmp_path, monkeypatch):
    flaky = (f'n=$(( $(cat {tmp_path}/n 2>/dev/null || echo 0) + 1 )); echo $n > {tmp_path}/n\n'
             'if [ $n = 1 ]; then echo "sacct: error: Socket timed out on send/recv operation" >&2; exit 1; fi\n'
             'echo "5_0|RUNNING"')
    s = fake_clients(tmp_path, monkeypatch, sacct=flaky, squeue='exit 0',
                     sbatch='echo "sbatch: error: Socket timed out on send/recv operation" >&2; exit 1')
    assert s.query(["5"]) == {"5": {0: "running"}}
    with pytest.raises(SubmissionError, match="Socket timed out") as e:
        s.submit(tmp_path / "x.sbatch", None)
    assert e.value.queued == []  # squeue found no job of that script
    assert [c.split()[0] for c in calls(tmp_path)] == ["sacct", "sacct", "sbatch", "squeue"]


def test_sbatch_without_a_readable_id_finds_its_job_by_script(tmp_path, monkeypatch):
    script = tmp_path / "s0-0.sbatch"
    script.write_text("#!/bin/bash\n#SBATCH --job-name=RUN.shards\n")
    other = tmp_path / "other.sbatch"
    s = fake_clients(tmp_path, monkeypatch, sbatch='echo 77; echo "Remaining balance: 12 GPU-h"',
                     squeue=f'echo "{BANNER}"; echo "70_[0-3]|{other}"; echo "77_[0-3]|{script}"; echo "77_4|{script}"')
    assert s.submit(script, None) == "77"
    assert "--name=RUN.shards" in calls(tmp_path)[-1] and "-t all" in calls(tmp_path)[-1]


def test_sbatch_printing_no_id_and_queuing_nothing_fails_cleanly(tmp_path, monkeypatch):
    script = tmp_path / "s0-0.sbatch"
    script.write_text("#SBATCH --job-name=RUN.shards\n")
    s = fake_clients(tmp_path, monkeypatch, sbatch='echo "Your job was accepted"', squeue="exit 0")
    with pytest.raises(SubmissionError, match="printed no job id.*no job of") as e:
        s.submit(script, None)
    assert e.value.queued == []


def test_task_ended_reads_squeue_strictly(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "submissions.jsonl").write_text(json.dumps(
        {"job_id": "12", "stage": "client", "chunk": 0, "offset": 0, "tasks": [0, 1]}) + "\n")
    fake_clients(tmp_path, monkeypatch, squeue=f'echo "{BANNER} 12_1"; echo 12_0')
    assert not layout.task_ended(run_dir, "client", "h", 0, "slurm")  # 12_0 is queued
    assert layout.task_ended(run_dir, "client", "h", 1, "slurm")  # 12_1 only appears inside a banner
    fake_clients(tmp_path, monkeypatch, squeue='echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1')
    assert layout.task_ended(run_dir, "client", "h", 0, "slurm")  # purged: not in the queue, ended
    fake_clients(tmp_path, monkeypatch, squeue='echo "slurm_load_jobs error: Socket timed out" >&2; exit 1')
    assert not layout.task_ended(run_dir, "client", "h", 0, "slurm")  # no answer: ask again next round


def test_node_hosts_ignore_a_scontrol_banner(tmp_path, monkeypatch):
    from jobs.runtime.allocation import node_hosts

    fake_clients(tmp_path, monkeypatch, scontrol=f'echo "{BANNER}"; printf "gpu-a01\\ngpu-a02\\n"; echo "Welcome!"; echo "Goodbye"')
    env = {"PATH": os.environ["PATH"], "SLURM_JOB_NODELIST": "gpu-a[01-02]", "SLURM_JOB_NUM_NODES": "2"}
    with pytest.raises(RuntimeError, match="3 host"):  # a one-word banner line is not taken for a host silently
        node_hosts(env)
    fake_clients(tmp_path, monkeypatch, scontrol=f'echo "{BANNER}"; printf "gpu-a01\\ngpu-a02\\n"')
    assert node_hosts(env) == ["gpu-a01", "gpu-a02"]


# ----------------------------------------------------------------------------- status

class Answer:
    """A scheduler that knows only the jobs in `states`."""

    lost_grace_s = 120.0

    def __init__(self, states):
        self.states, self.settled = states, []

    def query(self, ids, settled=()):
        self.settled.append(sorted(settled))
        return self.states


def make_run(tmp_path, edges=None):
    """The smoke plan (shards 4 -> reduce -> fanout (afterany), checkpointing (afterok)), with some
    edges changed: {stage: kind}."""
    plan = build_plan([compose(["pipeline=smoke", "cluster=dev"])], [[]])
    for name, kind in (edges or {}).items():
        plan.stages[name].deps[0].kind = kind
    layout.atomic_write_json(tmp_path / "plan.json", plan.to_json())
    run = Run(tmp_path)
    for i, (stage, n) in enumerate([("shards", 4), ("reduce", 1), ("fanout", 2), ("checkpointing", 1)]):
        run.append_ledger({"job_id": str(10 + i), "stage": stage, "chunk": 0, "offset": 0, "tasks": list(range(n)),
                           "batch": "s0"})
    path = tmp_path / "submissions.jsonl"  # submitted an hour ago
    path.write_text("".join(json.dumps(dict(json.loads(x), time=time.time() - 3600)) + "\n"
                            for x in path.read_text().splitlines()))
    return run, plan


def done(tmp_path, plan, stage, *tasks):
    for t in tasks:
        layout.atomic_write_json(layout.marker_path(tmp_path, stage, plan.stages[stage].hash, t), {})


def test_afternotok_of_succeeded_parents_is_skipped_and_skips_propagate(tmp_path):
    run, plan = make_run(tmp_path, {"reduce": "afternotok"})
    done(tmp_path, plan, "shards", 0, 1, 2, 3)
    done(tmp_path, plan, "fanout", 0, 1)  # afterany on reduce: it ran
    st = collect(run, Answer({"11": {0: "cancelled"}, "13": {0: "cancelled"}}))
    assert st.stages["reduce"].tasks == {0: "skipped"} and st.stages["checkpointing"].tasks == {0: "skipped"}
    assert st.stages["reduce"].state == "SKIPPED" and st.state == "COMPLETED" and st.exit_code == 0


def test_afternotok_after_a_failure_is_a_real_cancellation(tmp_path):
    run, plan = make_run(tmp_path, {"reduce": "afternotok"})
    done(tmp_path, plan, "shards", 0, 1, 2)
    st = collect(run, Answer({"10": {3: "failed"}, "11": {0: "cancelled"}, "12": {0: "completed", 1: "completed"},
                              "13": {0: "cancelled"}}))
    assert st.stages["reduce"].tasks == {0: "cancelled"} and st.state == "FAILED"


def test_afterany_child_of_a_skipped_stage_is_not_skipped(tmp_path):
    run, plan = make_run(tmp_path, {"reduce": "afternotok"})
    done(tmp_path, plan, "shards", 0, 1, 2, 3)
    st = collect(run, Answer({"11": {0: "cancelled"}, "12": {0: "cancelled", 1: "running"}, "13": {0: "cancelled"}}))
    assert st.stages["fanout"].tasks == {0: "cancelled", 1: "running"}  # afterany holds: they were to run


def test_unknown_job_is_pending_within_the_grace_and_lost_after_it(tmp_path):
    run, plan = make_run(tmp_path)
    done(tmp_path, plan, "shards", 0, 1, 2)
    path = tmp_path / "submissions.jsonl"
    recs = [json.loads(x) for x in path.read_text().splitlines()]
    recs[0]["time"] = time.time()  # shards: just submitted
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    layout.marker_path(tmp_path, "shards", plan.stages["shards"].hash, 3, "running-10_3").touch()
    sched = Answer({})
    st = collect(run, sched)
    assert st.stages["shards"].tasks[3] == "running" and sched.settled[-1] == ["11", "12", "13"]
    recs[0]["time"] -= 3600  # an hour later, still unknown to sacct and squeue: lost, whatever its marker says
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    st = collect(run, sched)
    assert st.stages["shards"].tasks[3] == "lost" and st.stages["shards"].active_jobs == []
    assert st.stages["reduce"].tasks == {0: "lost"} and st.state == "FAILED"
    # resume and cancel ask about every unknown job at once
    recs[0]["time"] = time.time()
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    st = collect(run, sched, strict=True)
    assert sched.settled[-1] == ["10", "11", "12", "13"] and st.stages["shards"].tasks[3] == "lost"


def test_unknown_job_whose_task_left_its_failure_marker_is_failed(tmp_path):
    run, plan = make_run(tmp_path)
    h = plan.stages["shards"].hash
    done(tmp_path, plan, "shards", 0, 1)
    layout.atomic_write_json(layout.marker_path(tmp_path, "shards", h, 2, "failed"), {"job_id": "10_2"})
    layout.atomic_write_json(layout.marker_path(tmp_path, "shards", h, 3, "failed"), {"job_id": "3_3"})  # older attempt
    st = collect(run, Answer({}))
    assert st.stages["shards"].tasks == {0: "completed", 1: "completed", 2: "failed", 3: "lost"}


def test_resume_refuses_an_edge_it_cannot_pass_to_sbatch(tmp_path):
    from launcher.run.ops import check_dependencies

    run, plan = make_run(tmp_path, {"reduce": "afternotok"})
    states = {"shards": {t: "completed" for t in range(4)}, "reduce": {0: "failed"},
              "fanout": {0: "completed", 1: "completed"}, "checkpointing": {0: "cancelled"}}
    with pytest.raises(LauncherError, match="stage 'reduce'.*afternotok.*4 completed.*Nothing was submitted"):
        check_dependencies(plan, {"reduce": [0], "checkpointing": [0]}, states, {})
    check_dependencies(plan, {"shards": [3], "reduce": [0]}, states, {})  # the edge is passed: fine
    states["reduce"] = {0: "completed"}
    check_dependencies(plan, {"checkpointing": [0]}, states, {})  # afterok on a completed parent holds


def test_local_job_the_driver_will_never_run_is_lost(tmp_path):
    from launcher.local.backend import Local

    local = Local({"max_parallel": 1}, tmp_path)
    (tmp_path / "local" / "jobs").mkdir(parents=True)
    layout.atomic_write_json(tmp_path / "local" / "state.json", {"1": {"0": {"state": "completed", "restarts": 0,
                                                                               "exit": 0}}})
    assert local.query(["1", "2"]) == {"1": {0: "completed"}}  # no driver: job 2 is unknown (lost)
    assert Local.lost_grace_s == 0


# ----------------------------------------------------------------------------- filename patterns

def test_filename_patterns_escape_percent_and_refuse_backslash():
    assert filename_pattern(Path("/r/a%x%j%%")) == "/r/a%%x%%j%%%%"
    fields = {"A": "12", "a": "3", "j": "12_3", "x": "run.s"}
    assert expand_pattern(filename_pattern(Path("/r/a%x%j%%")) + "/%A_%a_0_log.out", fields) == "/r/a%x%j%%/12_3_0_log.out"
    assert expand_pattern("/r/%x/%4a/%q", fields) == "/r/run.s/0003/%q"
    assert unsafe_path_reason("/r/a%x") is None
    assert "backslash" in unsafe_path_reason("/r/a\\b") and "control" in unsafe_path_reason("/r/a\nb")


def test_the_log_a_script_names_is_the_one_launcher_logs_reads():
    """One naming (sbatch/lognames.log_stem): the batch script's --output pattern, expanded for a task
    (by Slurm, or the local driver), is the file `launcher logs` opens for that task."""
    fields = {"A": "12", "a": "3", "t": "0"}
    assert log_stem(rank=0) == "%A_%a_0_log" and log_stem() == "%A_%a_%t_log"
    assert expand_pattern(f"/r/{log_stem(rank=0)}.out", fields) == f"/r/{log_stem(12, 3, 0)}.out" == "/r/12_3_0_log.out"
    assert expand_pattern(f"/r/{log_stem()}.err", fields) == "/r/12_3_0_log.err"


def test_scrontab_log_path_is_escaped(tmp_path, monkeypatch):
    """`launcher schedule` writes its entry's --output as a Slurm pattern: a % of the run root doubled."""
    from launcher.run import schedule
    from launcher.slurm import scrontab

    written = {}
    monkeypatch.setattr(scrontab, "read_crontab", lambda env: "")
    monkeypatch.setattr(scrontab, "write_crontab", lambda text, env: written.setdefault("text", text))
    monkeypatch.setattr(scrontab, "crontab_lock", __import__("contextlib").nullcontext)
    root = tmp_path / "r%x"
    parser = schedule._ScheduleParser(prog="t")
    schedule._add_arguments(parser)
    ns = parser.parse_args(["nightly", "--cron", "0 2 * * *", "--cluster", "local", "--", "run", "pipeline=smoke",
                            f"run_root={root}"])
    assert schedule.cmd_schedule(ns) == 0
    line = next(x for x in written["text"].splitlines() if x.startswith("#SCRON --output="))
    assert line == f"#SCRON --output={tmp_path}/r%%x/schedules/nightly/scron.log"
