"""The pure parts of scripts/gpu-check (benchmarks/gpu_check.py): the MFU arithmetic against a number
worked by hand, the table, and the requeue-resume verdict over a run directory laid out as
jobs/layout.py and jobs/runtime/checkpoints.py write it. The checks themselves need a GPU (or minutes of
CPU: `scripts/gpu-check --cpu`, docs/gpu-check.md)."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check as g  # noqa: E402

from jobs.runtime.checkpoints import MARKER  # noqa: E402


def test_active_params_of_the_gpu_model_worked_by_hand():
    # hidden 768, 12 layers, 12 heads of 64, 4 KV heads, MLP 2048, vocabulary 32768, tied embeddings:
    # attention 2*768*768 + 2*768*(4*64) = 1,572,864; MLP 3*768*2048 = 4,718,592; norms 2*768;
    # 12 layers = 75,515,904; embeddings 32768*768 = 25,165,824; final norm 768.
    assert g.active_params(g.MODEL_100M, 32768) == 75_515_904 + 25_165_824 + 768 == 100_682_496


def test_mfu_is_six_n_tokens_over_the_peak():
    # 6 x 100,682,496 x 500,000 tokens/s = 302.047488 TFLOP/s of 989 -> 30.54 %
    assert g.mfu(500_000, 100_682_496, 989.0) == pytest.approx(302.047488 / 989.0, rel=1e-12)
    assert g.fmt_pct(g.mfu(500_000, 100_682_496, 989.0)) == "30.5%"
    assert g.mfu(None, 100, 989.0) is None and g.mfu(1000.0, 100, None) is None  # no rate; CPU mode


def test_table_pads_columns_and_escapes_pipes():
    out = g.render_table(("check", "tok/s"), [["hf", "1,234"], ["a|b", "-"]])
    assert out.splitlines() == ["| check | tok/s |", "|-------|-------|", "| hf    | 1,234 |", "| a\\|b  | -     |"]
    with pytest.raises(ValueError, match="2 cells"):
        g.render_table(("a", "b"), [["only one"]])


def test_speed_row_puts_both_rates_their_ratio_and_mfus_side_by_side():
    row = g.speed_row("hf", {"tokens_per_s": 450_000.0}, {"tokens_per_s": 500_000.0}, 100_682_496, 989.0, "ok")
    assert row == ["hf", "450,000", "500,000", "0.90", "27.5%", "30.5%", "ok"]
    assert g.speed_row("sft", None, {"tokens_per_s": 10.0}, 1, None, "FAIL") == \
        ["sft", "-", "10", "-", "-", "-", "FAIL"]
    assert len(row) == len(g.HEADERS)


def fake_run(tmp_path: Path, checkpoints: dict, result: dict, log: str, restarts: int = 1) -> Path:
    """A run directory as the hf backend leaves it: marked checkpoints, result.json, done marker, log."""
    run = tmp_path / "run"
    stage = run / "stages" / "train"
    for step, reason in checkpoints.items():
        d = stage / "ckpt" / "0" / f"checkpoint-{step}"
        d.mkdir(parents=True)
        (d / MARKER).write_text(json.dumps({"step": step, "reason": reason}))
    (stage / "out" / "0" / "0").mkdir(parents=True)
    (stage / "out" / "0" / "0" / "result.json").write_text(json.dumps(result))
    (stage / "markers" / "abc").mkdir(parents=True)
    (stage / "markers" / "abc" / "0.done").write_text(json.dumps({"restarts": restarts}))
    (stage / "logs").mkdir()
    (stage / "logs" / "1_0_0_log.err").write_text(log)
    return run


def test_resume_from_the_stop_checkpoint_to_the_last_step_passes(tmp_path):
    run = fake_run(tmp_path, {15: "interval", 17: "stop", 30: "interval", 60: "final"},
                   {"resumed_from": 17, "final_step": 60, "final_loss": 4.5000},
                   "stop requested at step 17/60\nresuming from checkpoint-17 (step 17, 2,176 tokens), attempt 2\n")
    v = g.judge_resume(run, 60, 15, {"final_loss": 4.5001}, rtol=1e-4)
    assert v["resume_ok"], v["checks"]
    assert (v["stop_checkpoint"], v["resumed_from"], v["restarts"]) == (17, 17, 1)
    assert v["abs_loss_diff"] == pytest.approx(1e-4)


@pytest.mark.parametrize("change,failed", [
    ({"result": {"resumed_from": 15}}, "resumed from the newest complete checkpoint"),  # an older one
    ({"result": {"final_step": 59}}, "reached the last step"),
    ({"restarts": 2}, "one requeue"),
    ({"log": "starting from scratch (attempt 2)\n"}, "the log says where it resumed"),
    ({"ref": 4.6}, "same final loss as uninterrupted"),
    ({"checkpoints": {15: "interval", 60: "final"}}, "stop checkpoint after the signal's step"),  # never stopped
])
def test_each_wrong_resume_is_named(tmp_path, change, failed):
    result = {"resumed_from": 17, "final_step": 60, "final_loss": 4.5, **change.get("result", {})}
    run = fake_run(tmp_path, change.get("checkpoints", {15: "interval", 17: "stop", 60: "final"}), result,
                   change.get("log", "resuming from checkpoint-17 (step 17), attempt 2\n"), change.get("restarts", 1))
    v = g.judge_resume(run, 60, 15, {"final_loss": change.get("ref", 4.5)}, rtol=1e-4)
    assert not v["resume_ok"]
    wrong = [c for c, ok in v["checks"].items() if not ok]
    assert wrong[0] == failed and (len(wrong) == 1 or "checkpoints" in change), wrong
    assert failed in g.requeue_row({**v, "ok": False}, 15, 60)[-1]


def test_processes_are_found_by_their_command_line(tmp_path):
    """What the requeue check signals (a task of the run) and what cleanup waits for (its local scheduler)."""
    import subprocess

    code = "import time; time.sleep(30)"
    task = subprocess.Popen([sys.executable, "-c", code, "-m", "jobs.task", str(tmp_path / "run" / "spec.json")])
    other = subprocess.Popen([sys.executable, "-c", code, "-m", "jobs.task", "/elsewhere/spec.json"])
    try:
        assert g.processes_naming(tmp_path) == [task.pid]
        assert g.processes_naming(tmp_path, g.DRIVER_MODULE) == []
    finally:
        for p in (task, other):
            p.kill()
            p.wait()


def test_a_failed_check_says_why_from_the_failure_marker(tmp_path):
    run = tmp_path / "run"
    (run / "stages" / "train" / "markers" / "abc").mkdir(parents=True)
    (run / "stages" / "train" / "markers" / "abc" / "0.failed").write_text(json.dumps(
        {"error": "Traceback (most recent call last):\n  ...\nModuleNotFoundError: No module named 'trl'\n"}))
    r = g.Runner.__new__(g.Runner)
    r.work = tmp_path
    assert g.where(r, "hf", {"run_dir": str(run)}) == "task: ModuleNotFoundError: No module named 'trl'"
    (tmp_path / "runs" / "sft").mkdir(parents=True)
    (tmp_path / "runs" / "sft" / "launcher.log").write_text("composing\nerror: stage 'sft': cluster.environments.gpu-trl.python: cannot import trl\n")
    assert g.where(r, "sft", {"run_dir": None}).startswith("launcher: error: stage 'sft'")


def test_the_local_scheduler_is_found_by_the_module_its_start_line_names():
    """Cleanup waits for the run's local scheduler by the module name on its command line: the name
    gpu_check looks for is the one launcher/local/backend.py starts (a move of the driver breaks this)."""
    from launcher.local import backend

    assert f"from {g.DRIVER_MODULE} import main" in backend.DRIVER
    assert importlib.util.find_spec(g.DRIVER_MODULE) is not None


def test_the_quantize_row_shows_sizes_and_bits_per_byte_or_why_it_was_skipped():
    row = g.quantize_row({"ok": True, "result": {"quantization": {
        "type": "nf4", "size_mb": 310.2, "original_size_mb": 880.1,
        "bits_per_byte": {"original": 4.1, "quantized": 4.2, "relative": 0.024}}}})
    assert row == ["quantize bnb nf4", "310 MB", "880 MB", "0.35", "4.2000 bpb", "4.1000 bpb", "ok; bpb +2.40%"]
    assert g.quantize_row({"ok": True, "skipped": "bnb needs a GPU (--cpu)"})[-1].startswith("ok (skipped")
    assert g.quantize_row({"ok": False, "error": "RuntimeError: x"})[-1] == "FAIL (RuntimeError: x)"
