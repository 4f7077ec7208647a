"""The runs index (launcher/run/runs_db.py): the same rows as reading every run directory, filters by
campaign/state/age, rows re-read when a run changes (a verb wrote it, or it was UNFINISHED), COMPLETED
rows served without reading their run again, and the directory scan when the index cannot be used."""
import json
import os
import time

import pytest

from jobs import layout
from launcher.run import runs_db, status
from launcher.cli import main
from launcher.config.compose import compose
from launcher.plan.model import build_plan
from launcher.run.rundir import SUBMISSION_FAILED, Run, list_runs

PLAN = None


def plan():
    global PLAN
    if PLAN is None:
        PLAN = build_plan([compose(["pipeline=smoke", "cluster=dev"])], [[]])
    return PLAN


def make_run(root, run_id, created, campaign=None, done=False, failed=False):
    d = root / run_id
    layout.atomic_write_json(d / "plan.json", plan().to_json())
    layout.atomic_write_json(d / "run.json", {"id": run_id, "created": created, "pipeline": "smoke", "cluster": "dev",
                                              "points": [[]], **({"campaign": campaign} if campaign else {})})
    Run(d).append_ledger({"job_id": "7", "stage": "shards", "chunk": 0, "offset": 0, "tasks": [0, 1, 2, 3]})
    if done:
        complete(d)
    if failed:
        layout.atomic_write_json(layout.marker_path(d, "shards", plan().stages["shards"].hash, 3, "failed"),
                                 {"job_id": "7_3"})
    return d


def complete(d):
    for name, s in plan().stages.items():
        for t in range(s.total_tasks):
            layout.atomic_write_json(layout.marker_path(d, name, s.hash, t), {})


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setattr(runs_db, "MTIME_SLACK_NS", 0)  # the test's markers are all written within a second
    r = tmp_path / "runs"
    now = time.time()
    make_run(r, "old-done", now - 30 * 86400, campaign="nightly", done=True)
    make_run(r, "new-failed", now - 3600, campaign="nightly", failed=True)
    make_run(r, "new-queued", now - 60, campaign="sweep")
    make_run(r, "other-done", now - 2 * 86400, done=True)
    return r


def scan(root):
    return [runs_db.row_of(r) for r in list_runs(root)]


def test_the_index_answers_what_the_directories_say_and_filters(root):
    assert runs_db.runs(root) == scan(root)
    assert runs_db.db_path().is_file()
    assert [r["run"] for r in runs_db.runs(root, campaign="nightly")] == ["new-failed", "old-done"]
    assert [r["run"] for r in runs_db.runs(root, state="FAILED")] == ["new-failed"]
    assert [r["run"] for r in runs_db.runs(root, since_s=7 * 86400)] == ["new-queued", "new-failed", "other-done"]
    assert [r["run"] for r in runs_db.runs(root, campaign="nightly", state="COMPLETED", since_s=7 * 86400)] == []
    assert [r["run"] for r in runs_db.runs(root, limit=2)] == ["new-queued", "new-failed"]


def test_an_unfinished_run_that_completes_on_the_nodes_is_seen_without_any_verb(root):
    assert {r["run"]: r["state"] for r in runs_db.runs(root)}["new-queued"] == "UNFINISHED"
    complete(root / "new-queued")  # markers only: no launcher verb touched the run
    assert {r["run"]: r["state"] for r in runs_db.runs(root)}["new-queued"] == "COMPLETED"


def test_ended_runs_are_served_from_the_index_until_a_verb_writes_them(root, monkeypatch):
    runs_db.runs(root)
    read = []
    real = status.recorded_state
    monkeypatch.setattr(status, "recorded_state", lambda run: read.append(run.id) or real(run))
    runs_db.runs(root)
    assert read == []  # nothing changed: not even the UNFINISHED run is read again
    layout.atomic_write_json(layout.marker_path(root / "new-queued", "shards", plan().stages["shards"].hash, 0), {})
    runs_db.runs(root)
    assert read == ["new-queued"]  # a marker appeared in its folder: read again
    read.clear()
    Run(root / "old-done").append_ledger({"job_id": "9", "stage": "shards", "chunk": 0, "offset": 0, "tasks": [0]})
    rows = {r["run"]: r for r in runs_db.runs(root)}
    assert read == ["old-done"] and rows["old-done"]["jobs"] == 2


def test_removed_runs_and_failed_launches_leave_the_list(root):
    runs_db.runs(root)
    for f in (root / "other-done").rglob("*"):
        if f.is_file():
            f.unlink()
    for d in sorted((root / "other-done").rglob("*"), reverse=True):
        d.rmdir()
    (root / "other-done").rmdir()
    layout.atomic_write_json(root / "new-queued" / SUBMISSION_FAILED, {"error": "sbatch refused"})
    assert [r["run"] for r in runs_db.runs(root)] == ["new-failed", "old-done"] == [r["run"] for r in scan(root)]


def test_an_index_that_cannot_be_written_costs_speed_not_the_answer(root, monkeypatch, tmp_path):
    ro = tmp_path / "ro-state"
    ro.mkdir()
    os.chmod(ro, 0o500)
    monkeypatch.setenv("LAUNCHER_STATE_DIR", str(ro / "launcher"))
    try:
        if os.access(ro, os.W_OK):  # root ignores the mode: make the index path a file in the way instead
            (ro / "launcher").write_text("not a directory")
        assert runs_db.runs(root) == scan(root)
        assert runs_db.runs(root, state="FAILED")[0]["run"] == "new-failed"
    finally:
        os.chmod(ro, 0o700)


def test_reindex_forgets_and_rereads(root, monkeypatch):
    runs_db.runs(root)
    expected = scan(root)
    read = []
    real = status.recorded_state
    monkeypatch.setattr(status, "recorded_state", lambda run: read.append(run.id) or real(run))
    assert runs_db.runs(root, reindex=True) == expected
    assert sorted(read) == sorted(r.id for r in list_runs(root))


def test_cli_filters_and_a_bad_age(root, capsys):
    assert main(["runs", "--root", str(root), "--campaign", "nightly", "--state", "failed", "--since", "7d",
                 "--json"]) == 0
    assert [r["run"] for r in json.loads(capsys.readouterr().out)] == ["new-failed"]
    with pytest.raises(SystemExit) as e:
        main(["runs", "--root", str(root), "--since", "a week"])
    assert e.value.code == 64
    assert "expected a duration like 90s, 30m, 12h, 7d or 2w, not 'a week'" in capsys.readouterr().err


def test_a_marker_folder_changed_within_the_timestamp_slack_is_read_again(root, monkeypatch):
    """On a filesystem with 1 s timestamps a second marker in the same second leaves the folder's mtime
    as it was: a folder changed that recently gives no signature, so the run is read again next time."""
    monkeypatch.setattr(runs_db, "MTIME_SLACK_NS", 3600 * 10**9)  # every folder counts as just changed
    layout.atomic_write_json(layout.marker_path(root / "new-queued", "shards", plan().stages["shards"].hash, 0), {})
    runs_db.runs(root)
    read = []
    real = status.recorded_state
    monkeypatch.setattr(status, "recorded_state", lambda run: read.append(run.id) or real(run))
    runs_db.runs(root)
    runs_db.runs(root)
    assert read == ["new-queued", "new-queued"]
