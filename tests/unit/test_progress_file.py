"""jobs/runtime/progress.py: the live progress file's writer throttles, writes atomically, refuses
unknown fields, survives an unwritable folder; the ETA is the average rate since the start."""
import json

import pytest

from jobs import layout
from jobs.runtime.progress import ProgressWriter, eta_s, read_progress

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_writes_at_most_every_interval_and_on_force(tmp_path):
    clock = Clock()
    path = layout.progress_path(tmp_path, "pretrain", 3)
    w = ProgressWriter(path, min_interval_s=5, clock=clock)
    assert w.update(step=1, total_steps=10, loss=2.5)
    clock.t += 1
    assert not w.update(step=2)  # too soon
    assert read_progress(path)["step"] == 1
    assert w.update(step=3, last_checkpoint="ckpt/3", force=True)
    rec = read_progress(path)
    assert rec["step"] == 3 and rec["loss"] == 2.5 and rec["time"] == 1001.0 and rec["started"] == 1000.0
    assert path == tmp_path / "stages" / "pretrain" / "progress" / "3.json"
    assert not list(path.parent.glob(".*.tmp"))  # no temporary file left behind


def test_unknown_field_is_refused(tmp_path):
    w = ProgressWriter(tmp_path / "p.json")
    with pytest.raises(ValueError, match="unknown progress field"):
        w.update(stpe=1)


def test_unwritable_folder_does_not_raise(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    w = ProgressWriter(blocker / "sub" / "p.json", min_interval_s=0)
    assert not w.update(step=1)
    assert not w.update(step=2)
    assert capsys.readouterr().out.count("cannot write") == 1


def test_read_progress_of_missing_or_torn_file(tmp_path):
    assert read_progress(tmp_path / "none.json") is None
    (tmp_path / "torn.json").write_text('{"step": 1')
    assert read_progress(tmp_path / "torn.json") is None


def test_eta_is_the_average_rate_since_the_start():
    rec = {"started": 0.0, "time": 100.0, "step": 25, "total_steps": 100}
    assert eta_s(rec) == pytest.approx(300.0)
    assert eta_s({"started": 0.0, "time": 100.0, "step": 0, "total_steps": 100}) is None
    assert eta_s({"time": 5.0, "step": 1}) is None
    assert json.dumps(rec)
