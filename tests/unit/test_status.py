"""Status from markers plus one scheduler answer (a fake scheduler: the edge cases of its answers); why
tasks wait, per-task detail, progress, plain tables, `logs` without a log, exit 69 (issue 18 item 4)."""
import json

from launcher import exitcodes
from launcher.answer import Answer as Reply
from launcher.config.compose import compose
from launcher.plan.model import build_plan
from launcher.run.rundir import Run
from launcher.slurm.accounting import parse_sacct, parse_squeue
from launcher.slurm.client import Slurm
from launcher.run.status import collect
from fake_slurm import calls, fake_clients

from jobs import layout


class Answer:
    def __init__(self, states):
        self.states, self.queries = states, []

    lost_grace_s = 60.0

    def query(self, ids, settled=()):
        self.queries.append(sorted(ids))
        return self.states


def make_run(tmp_path):
    plan = build_plan([compose(["pipeline=smoke", "cluster=dev"])], [[]])
    layout.atomic_write_json(tmp_path / "plan.json", plan.to_json())
    run = Run(tmp_path)
    run.append_ledger({"job_id": "7", "stage": "shards", "chunk": 0, "offset": 0, "tasks": [0, 1, 2, 3], "batch": "s0"})
    return run, plan


def test_markers_decide_completed_and_one_query_covers_the_rest(tmp_path):
    run, plan = make_run(tmp_path)
    h = plan.stages["shards"].hash
    layout.atomic_write_json(layout.marker_path(tmp_path, "shards", h, 0), {})
    layout.marker_path(tmp_path, "shards", h, 1, "running-7_1").touch()  # accounting lags: sacct says pending
    layout.marker_path(tmp_path, "shards", h, 2, "running-6_2").touch()  # stale, from another job
    sched = Answer({"7": {0: "running", 1: "pending", 2: "pending", 3: "completed"}})
    st = collect(run, sched)
    assert st.stages["shards"].tasks == {0: "completed", 1: "running", 2: "pending", 3: "failed"}  # 3: no marker
    assert st.stages["reduce"].tasks == {0: "missing"}
    assert sched.queries == [["7"]] and st.exit_code == 2


def test_a_completed_run_asks_the_scheduler_nothing(tmp_path):
    run, plan = make_run(tmp_path)
    for name, s in plan.stages.items():
        for t in range(s.total_tasks):
            layout.atomic_write_json(layout.marker_path(tmp_path, name, s.hash, t), {})
    sched = Answer({})
    st = collect(run, sched)
    assert st.state == "COMPLETED" and st.exit_code == 0 and sched.queries == []


# -- why tasks wait, per-task detail, progress, logs (issue 18 item 4) ------------------------------------

# What squeue -h -r -t all -o '%i|%T|%r' and sacct -X -n -P -o JobID,State,Reason print (Slurm 22.05 and
# 23.11 on the dev cluster): a site banner, pending tasks split off by -r with their reason, a running one.
SQUEUE = """\
Welcome to the cluster: maintenance on Friday
7_0|RUNNING|None
7_1|PENDING|Priority
7_2|PENDING|QOSMaxGRESPerUser
8_0|PENDING|Dependency
9_3|PENDING|ReqNodeNotAvail, UnavailableNodes:n[1-2]
"""
# sacct lags slurmctld (7_0 still PENDING) and never records Priority/Resources (sacct(1) Reason).
SACCT = """\
7_0|PENDING|None
7_[1-2]|PENDING|None
8_0|PENDING|Dependency
6_0|COMPLETED|None
6_1|CANCELLED by 0|DependencyNeverSatisfied
"""


def test_squeue_and_sacct_reasons_are_parsed_with_the_states():
    sq = parse_squeue(SQUEUE)
    assert sq == {"7": {0: "running", 1: "pending", 2: "pending"}, "8": {0: "pending"}, "9": {3: "pending"}}
    assert sq.reasons == {"7": {1: "Priority", 2: "QOSMaxGRESPerUser"}, "8": {0: "Dependency"},
                          "9": {3: "ReqNodeNotAvail, UnavailableNodes:n[1-2]"}}  # "None" is no reason
    sa = parse_sacct(SACCT)
    assert sa["7"] == {0: "pending", 1: "pending", 2: "pending"} and sa["6"] == {0: "completed", 1: "cancelled"}
    assert sa.reasons == {"8": {0: "Dependency"}, "6": {1: "DependencyNeverSatisfied"}}
    assert parse_sacct("7_0|RUNNING") == {"7": {0: "running"}}  # the old two-field lines still read


def test_pending_tasks_get_their_reason_from_squeue_in_the_one_follow_up_call(tmp_path, monkeypatch):
    (tmp_path / "sacct.txt").write_text(SACCT)
    (tmp_path / "squeue.txt").write_text(SQUEUE)
    s = fake_clients(tmp_path, monkeypatch, sacct=f"cat {tmp_path}/sacct.txt", squeue=f"cat {tmp_path}/squeue.txt")
    a = s.query(["6", "7", "8"], settled=["6", "7", "8"])
    assert a["7"] == {0: "running", 1: "pending", 2: "pending"}  # slurmctld's state wins over accounting's lag
    assert a.reason("7", 1) == "Priority" and a.reason("7", 2) == "QOSMaxGRESPerUser" and a.reason("7", 0) is None
    assert a.reason("6", 1) == "DependencyNeverSatisfied"  # an ended task keeps sacct's word
    assert [c.split()[0] for c in calls(tmp_path)] == ["sacct", "squeue"]
    assert "-o JobID,State,Reason" in calls(tmp_path)[0] and "-o %i|%T|%r -j 7,8" in calls(tmp_path)[1]


def test_nothing_pending_is_one_sacct_call_and_no_accounting_one_squeue_call(tmp_path, monkeypatch):
    s = fake_clients(tmp_path, monkeypatch, sacct='echo "5_0|RUNNING|None"; echo "5_1|FAILED|None"',
                     squeue='echo "5_0|RUNNING|None"; echo "5_1|PENDING|Resources"')
    assert s.query(["5"], settled=["5"]) == {"5": {0: "running", 1: "failed"}}
    assert [c.split()[0] for c in calls(tmp_path)] == ["sacct"]  # no slurmctld query while nothing pends
    a = Slurm({"name": "x"}, accounting=False).query(["5"])
    assert a.reason("5", 1) == "Resources" and [c.split()[0] for c in calls(tmp_path)] == ["sacct", "squeue"]


def test_reasons_restarts_and_what_a_pending_task_waits_for(tmp_path):
    run, plan = make_run(tmp_path)
    run.append_ledger({"job_id": "8", "stage": "reduce", "chunk": 0, "offset": 0, "tasks": [0], "batch": "s0"})
    sched = Answer(Reply({"7": {0: "running", 1: "pending", 2: "pending", 3: "pending"}, "8": {0: "pending"}},
                   reasons={"7": {1: "Priority", 2: "JobArrayTaskLimit"}, "8": {0: "Dependency"}},
                   restarts={"7": {0: 2}}))
    st = collect(run, sched)
    shards, reduce = st.stages["shards"], st.stages["reduce"]
    assert shards.reasons == {1: "Priority", 2: "JobArrayTaskLimit"} and shards.restarts == {0: 2}
    assert shards.jobs == {0: "7_0", 1: "7_1", 2: "7_2", 3: "7_3"} and shards.waiting_for == {}
    assert reduce.reasons == {0: "Dependency"} and reduce.waiting_for == {0: ["shards"]}
    from launcher.run.status_view import pending_summary, why

    assert why(reduce, 0) == "waiting for shards" and why(shards, 2) == "throttled (array %N)"
    assert why(shards, 3) == ""  # the scheduler said nothing (yet)
    assert pending_summary(shards) == "1 Priority (others first), 1 pending, 1 throttled (array %N)"
    assert st.stages["fanout"].waiting_for == {}  # never submitted: missing, not pending


def test_status_json_per_point_and_per_task_with_logs_restarts_and_progress(tmp_path):
    from launcher.run.status_view import SCHEMA, status_json

    plan = build_plan([compose(["pipeline=smoke", "cluster=dev"])], [[]])
    layout.atomic_write_json(tmp_path / "plan.json", plan.to_json())
    run = Run(tmp_path)
    run.append_ledger({"job_id": "7", "stage": "shards", "chunk": 0, "offset": 0, "tasks": [0, 1, 2, 3], "batch": "s0"})
    run.append_ledger({"job_id": "9", "stage": "shards", "chunk": 0, "offset": 2, "tasks": [2], "batch": "r1"})
    h = plan.stages["shards"].hash
    layout.atomic_write_json(layout.marker_path(tmp_path, "shards", h, 0), {"restarts": 1})
    layout.atomic_write_json(layout.marker_path(tmp_path, "shards", h, 1, "running-7_1"), {"restarts": 2})
    layout.atomic_write_json(layout.progress_path(tmp_path, "shards", 1),
                             {"step": 120, "total_steps": 1000, "tokens_per_s": 3100.0, "loss": 2.3141,
                              "started": 1000.0, "time": 1060.0})
    sched = Answer(Reply({"7": {0: "completed", 1: "running", 3: "cancelled"}, "9": {0: "pending"}},
                   reasons={"9": {0: "Resources"}}))
    doc = json.loads(json.dumps(status_json(collect(run, sched), now=1090.0)))
    assert doc["schema"] == SCHEMA and doc["state"] == "RUNNING" and doc["exit_code"] == 2
    shards = doc["stages"][0]
    assert shards["name"] == "shards" and shards["cancelled"] == [3] and shards["failed"] == []
    assert shards["tasks"]["running"] == 1 and shards["pending_reasons"] == {"Resources": 1}
    assert shards["points"] == [{"point": 0, "state": "RUNNING", "failed": [], "cancelled": [3],
                                 "tasks": {**{k: 0 for k in shards["tasks"]}, "total": 4, "completed": 1,
                                           "running": 1, "pending": 1, "cancelled": 1}}]
    t0, t1, t2, t3 = shards["array"]
    keys = {"task", "point", "index", "state", "job", "reason", "waiting_for", "why", "restarts", "log", "progress"}
    assert all(set(t) == keys for t in shards["array"])
    assert t1["restarts"] == 2  # the running attempt's marker (jobs/task.py writes it)
    assert t0["restarts"] == 1 and t0["log"]["stdout"] == str(tmp_path / "stages/shards/logs/7_0_0_log.out")
    assert t2["job"] == "9_0" and t2["reason"] == "Resources" and t2["log"]["stderr"].endswith("logs/9_0_0_log.err")
    assert t1["progress"] == {"step": 120, "total_steps": 1000, "tokens": None, "tokens_per_s": 3100.0,
                              "loss": 2.3141, "last_checkpoint": None, "eta_s": 440.0, "age_s": 30.0}
    assert t3["state"] == "cancelled" and t3["progress"] is None and t3["reason"] is None
    reduce = doc["stages"][1]["array"][0]
    assert reduce["job"] is None and reduce["log"] is None and reduce["state"] == "missing"


def test_progress_column_is_compact():
    from launcher.run.status_view import duration, progress_text

    p = {"step": 120, "total_steps": 1000, "tokens_per_s": 3100.0, "loss": 2.3141, "eta_s": 250.0, "age_s": 4.0}
    assert progress_text(p) == "step 120/1000 · 3.1k tok/s · loss 2.31 · eta 4m"
    assert progress_text({"step": 5, "age_s": 900.0}) == "step 5 · 15m old"
    assert progress_text({}) == "" and duration(7500) == "2h05m" and duration(90000) == "1d01h"


def test_status_table_shows_why_and_progress_and_is_plain_when_piped(tmp_path, monkeypatch):
    from launcher.reports.display import plain_table, status_table

    run, plan = make_run(tmp_path)
    layout.atomic_write_json(layout.progress_path(tmp_path, "shards", 0),
                             {"step": 3, "total_steps": 10, "started": 0.0, "time": 9e12})
    st = collect(run, Answer(Reply({"7": {0: "running", 1: "pending", 2: "pending", 3: "pending"}},
                             reasons={"7": {1: "QOSMaxGRESPerUser", 2: "QOSMaxGRESPerUser", 3: "Priority"}})))
    text = plain_table(status_table(st))
    lines = text.splitlines()
    assert lines[0].startswith("# run ") and "RUNNING" in lines[0] and "[" not in lines[0]  # no markup left
    header = lines[1].split("\t")
    assert header[:3] == ["stage", "state", "total"] and header[-2:] == ["waiting", "progress"]
    row = dict(zip(header, lines[2].split("\t")))
    assert row["stage"] == "shards" and row["pending"] == "3" and row["waiting"] == "2 QOSMaxGRESPerUser, 1 Priority (others first)"
    assert row["progress"].startswith("[0] step 3/10")
    assert all(len(x.split("\t")) == len(header) for x in lines[1:])  # one row per line, every column there
    assert not set("│┃━─┏┡") & set(text)


def test_on_a_terminal_the_status_table_fits_its_width(tmp_path):
    from rich.console import Console

    from launcher.reports.display import fit, status_table

    run, plan = make_run(tmp_path)
    layout.atomic_write_json(layout.progress_path(tmp_path, "shards", 0),
                             {"step": 3, "total_steps": 10, "tokens_per_s": 31000.0, "loss": 2.5, "started": 0.0,
                              "time": 9e12})
    st = collect(run, Answer(Reply({"7": {0: "running", 1: "pending", 2: "pending", 3: "pending"}},
                                   reasons={"7": {1: "QOSMaxGRESPerUser", 2: "Priority", 3: "Priority"}})))
    c = Console(width=80, record=True)
    c.print(fit(status_table(st, plain=False), width=80))
    lines = c.export_text().splitlines()
    assert max(map(len, lines)) <= 80 and any("shards" in x and "RUNNING" in x for x in lines), lines
    assert any(x.startswith(" checkpointing") for x in lines) and "progress" in lines[2], lines
    assert "canc" not in lines[2] and "pend" in lines[2]  # only the counts that are not 0 somewhere


def test_plain_output_follows_the_terminal_unless_launcher_format_says(monkeypatch):
    from launcher.reports import display

    monkeypatch.delenv("LAUNCHER_FORMAT", raising=False)
    assert display.plain_output() is (not display.console.is_terminal)
    monkeypatch.setenv("LAUNCHER_FORMAT", "table")
    assert display.plain_output() is False
    monkeypatch.setenv("LAUNCHER_FORMAT", "plain")
    assert display.plain_output() is True


def test_logs_say_why_a_task_has_no_log(tmp_path):
    from launcher.run.logs import no_log_reason

    run, plan = make_run(tmp_path)
    run.append_ledger({"job_id": "8", "stage": "reduce", "chunk": 0, "offset": 0, "tasks": [0], "batch": "s0"})
    run.append_ledger({"job_id": "10", "stage": "fanout", "chunk": 0, "offset": 0, "tasks": [0, 1], "batch": "s0"})
    st = collect(run, Answer(Reply({"7": {0: "pending", 1: "failed", 2: "completed", 3: "running"}, "8": {0: "cancelled"},
                              "10": {0: "pending", 1: "pending"}}, reasons={"7": {0: "ReqNodeNotAvail"}})))
    assert no_log_reason(st, plan, "shards", 0) == "pending, ReqNodeNotAvail; it has not started"
    assert no_log_reason(st, plan, "shards", 3) == "running; it has written no output yet"
    assert no_log_reason(st, plan, "shards", 2).startswith("the task failed")  # exited 0 without a marker
    assert no_log_reason(st, plan, "reduce", 0).startswith("never ran: its parent shards[1] failed")
    assert no_log_reason(st, plan, "fanout", 0) == "pending, waiting for reduce[0]; it has not started"


def test_a_slurm_query_error_exits_69_not_1(tmp_path, monkeypatch):
    from launcher.cli import main

    run, plan = make_run(tmp_path)
    layout.atomic_write_json(tmp_path / "run.json", {"id": tmp_path.name, "backend": "slurm"})
    fake_clients(tmp_path, monkeypatch, sacct='echo "sacct: error: slurmdbd: Connection refused" >&2; exit 1')
    assert main(["status", str(tmp_path)]) == exitcodes.UNAVAILABLE == 69
    assert main(["status", str(tmp_path), "--json"]) == 69
    assert "69" in exitcodes.HELP and "Slurm did not answer" in exitcodes.HELP
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no Slurm client at all: unavailable too
    assert main(["status", str(tmp_path)]) == 69


def test_format_flag_overrides_the_terminal_choice(tmp_path, capsys):
    from launcher.cli import main
    from launcher.reports import display

    run, plan = make_run(tmp_path / "runs" / "r1")
    layout.atomic_write_json(run.path / "run.json", {"id": "r1", "created": 1.0, "pipeline": "smoke"})
    assert main(["runs", "--root", str(tmp_path / "runs"), "--format", "table"]) == 0
    drawn = capsys.readouterr().out
    assert "┃ run" in drawn and "\t" not in drawn and display.FORMAT == ""  # reset after the verb
    assert main(["runs", "--root", str(tmp_path / "runs"), "--format", "plain"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split("\t")[:2] == ["run", "state"] and lines[2].startswith("r1\tUNFINISHED\tsmoke")


def test_brackets_of_a_reason_are_shown_not_read_as_markup(tmp_path):
    from launcher.reports.display import plain_table, status_table

    run, plan = make_run(tmp_path)
    st = collect(run, Answer(Reply({"7": {0: "pending", 1: "pending", 2: "pending", 3: "pending"}},
                                   reasons={"7": {0: "ReqNodeNotAvail, UnavailableNodes:gpu[1-2]",
                                                  1: "ReqNodeNotAvail, UnavailableNodes:gpu[1-2]",
                                                  2: "Reservation [maint]", 3: "Reservation [maint]"}})))
    row = plain_table(status_table(st, plain=True)).splitlines()[2]  # [maint] would be a rich style tag
    assert "2 ReqNodeNotAvail, UnavailableNodes:gpu[1-2], 2 Reservation [maint]" in row, row


def test_what_a_pending_task_waits_for_is_the_same_with_the_parents_open_tasks_found_once():
    """status._details finds a whole parent's open tasks once per answer (waited_on's `whole`); per task,
    every edge kind gives what parent_tasks gives task by task (afterok, afterany, aftercorr; a sweep)."""
    from launcher.run.status import waited_on

    points = [[f"pipeline.vars.scale={p}"] for p in (1, 2, 3)]
    plan = build_plan([compose(["pipeline=smoke", "cluster=dev", *p]) for p in points], points)
    states = {name: {t: ("completed" if t % 3 else "pending") for t in range(st.total_tasks)}
              for name, st in plan.stages.items()}
    for name, st in plan.stages.items():
        whole: dict = {}
        for t in range(st.total_tasks):
            assert waited_on(plan, name, t, states, whole) == waited_on(plan, name, t, states), (name, t)
