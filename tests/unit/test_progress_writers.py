"""The writers of the live progress file: StepProgress (tokens/s over the interval, the last step and
checkpoints forced, first_step for the ETA of a resumed attempt), nanotron's log lines read as
progress, and the pipe that copies a child's output while a reader looks at each line."""
import io
import subprocess
import sys

import pytest

from jobs import layout
from jobs.adapters.nanotron import complete_steps
from jobs.adapters.nanotron_progress import NanotronProgress, human_number, parse_line
from jobs.runtime import processes
from jobs.runtime.progress import StepProgress, eta_s, interval_s, read_progress

pytestmark = pytest.mark.unit

# What nanotron's LoggerWriter prints (nanotron/logging/base.py add_scalars_from_list, human_format;
# the prefix is its formatter's, with the parallel ranks and the Slurm node name)
LINE = ("12/01/2026 06:00:00 [INFO|DP=0|PP=1|TP=0|mn1]: iteration: 12 / 100 | consumed_tokens: 49.2K | "
        "time_per_iteration_ms: 812 | tokens_per_sec: 5.04K | tokens_per_sec_per_gpu: 630 | "
        "global_batch_size: 4.1K | grad_norm: 1.23 | lm_loss: 9.87 | lr: 0.000291 | "
        "model_tflops_per_gpu: 0.512 | eta: 0:01:11.456000")


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_step_progress_rate_is_over_the_interval_since_the_last_write(tmp_path):
    clock = Clock()
    path = layout.progress_path(tmp_path, "train", 0)
    p = StepProgress(path, total_steps=10, min_interval_s=5, clock=clock)
    assert p.start(0, tokens=0)
    clock.t += 2
    assert not p.step(1, tokens=100)  # throttled
    clock.t += 3
    assert p.step(2, tokens=200)  # 200 tokens in 5 s
    assert read_progress(path)["tokens_per_s"] == 40.0
    clock.t += 10
    assert p.step(3, tokens=1200)  # 1000 tokens in the 10 s since the last write
    assert read_progress(path)["tokens_per_s"] == 100.0
    clock.t += 0.1
    assert p.loss(2.5) is False and p.checkpoint("ckpt/3")  # a checkpoint is written at once, loss with it
    rec = read_progress(path)
    assert rec["loss"] == 2.5 and rec["last_checkpoint"] == "ckpt/3" and rec["step"] == 3
    clock.t += 0.1
    assert p.step(10, tokens=4000)  # the last step: forced
    assert read_progress(path)["step"] == 10


def test_eta_counts_only_this_attempts_steps():
    resumed = {"started": 0.0, "time": 100.0, "step": 60, "first_step": 50, "total_steps": 100}
    assert eta_s(resumed) == pytest.approx(400.0)  # 10 steps in 100 s, 40 left
    assert eta_s({**resumed, "step": 50}) is None  # no step yet this attempt


def test_interval_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("LAUNCHER_PROGRESS_INTERVAL_S", "0.5")
    assert interval_s() == 0.5
    monkeypatch.setenv("LAUNCHER_PROGRESS_INTERVAL_S", "soon")
    assert interval_s() == 5.0


def test_human_numbers_as_nanotron_prints_them():
    assert human_number("49.2K") == pytest.approx(49200)
    assert human_number("9.87") == pytest.approx(9.87)
    assert human_number("1.05M") == pytest.approx(1.05e6)
    assert human_number("3.1e-05") == pytest.approx(3.1e-5)
    assert human_number("0:01:11") is None


def test_nanotron_iteration_line_is_parsed():
    rec = parse_line(LINE)
    assert rec == {"step": 12, "total_steps": 100, "loss": pytest.approx(9.87), "tokens_per_s": pytest.approx(5040)}
    assert parse_line("12/01/2026 06:00:00 [WARNING|DP=0]: Saving checkpoint at /ckpt/10") is None


def test_nanotron_progress_from_lines_and_latest_txt(tmp_path):
    ckpts = tmp_path / "ckpt"
    step10 = ckpts / "10"
    step10.mkdir(parents=True)
    path = layout.progress_path(tmp_path, "train", 0)
    reader = NanotronProgress(path, tokens_per_step=4096, checkpoints=ckpts, complete_steps=complete_steps,
                              total_steps=100, first_step=5, min_interval_s=0)
    reader.feed("unrelated line\n")
    assert read_progress(path) is None
    reader.feed(LINE)
    rec = read_progress(path)
    assert rec["step"] == 12 and rec["total_steps"] == 100 and rec["tokens"] == 12 * 4096
    assert rec["first_step"] == 5 and rec["loss"] == pytest.approx(9.87) and "last_checkpoint" not in rec
    (ckpts / "latest.txt").write_text("10")  # named, but not complete: not reported
    reader.feed(LINE)
    assert "last_checkpoint" not in read_progress(path)
    for f in ("checkpoint_metadata.json", "model_config.json"):
        (step10 / f).write_text("{}")
    for d in ("model", "optimizer", "lr_scheduler", "random"):
        (step10 / d).mkdir()
    reader.feed(LINE.replace("iteration: 12", "iteration: 13"))
    rec = read_progress(path)
    assert rec["last_checkpoint"] == str(step10) and rec["step"] == 13


def test_tee_copies_every_line_and_survives_a_failing_reader():
    child = subprocess.Popen([sys.executable, "-c", "print('a'); print('b'); print('c')"], stdout=subprocess.PIPE)
    sink, seen = io.BytesIO(), []

    def reader(line):
        seen.append(line)
        if line.startswith("b"):
            raise ValueError("bad line")

    t = processes.tee_lines(child.stdout, reader, sink)
    child.wait()
    t.join(timeout=10)
    assert sink.getvalue() == b"a\nb\nc\n" and seen == ["a\n", "b\n"]


def test_a_second_write_of_the_same_step_keeps_the_rate(tmp_path):
    clock = Clock()
    path = tmp_path / "p.json"
    p = StepProgress(path, total_steps=2, min_interval_s=5, clock=clock)
    p.start(0, tokens=0)
    clock.t += 10
    assert p.step(2, tokens=500)  # the last step
    clock.t += 1
    assert p.step(2, tokens=500, force=True)  # the end of training: same tokens
    assert read_progress(path)["tokens_per_s"] == 50.0


def test_summary_for_a_status_line():
    from jobs.runtime.progress import summary

    rec = {"started": 0.0, "time": 100.0, "step": 25, "total_steps": 100, "loss": 2.0, "tokens_per_s": 10.0}
    s = summary(rec, now=130.0)
    assert s["eta_s"] == pytest.approx(270.0) and s["age_s"] == 30.0 and s["step"] == 25 and s["loss"] == 2.0
    assert summary(None) is None and summary({"step": 1}) is None
