"""train.ema on the hf backend (jobs/adapters/ema.py, torch's AveragedModel): the moving average of the weights
beside every checkpoint, kept across a requeue, and scored by the evaluation beside the raw weights.

- resume: a run stopped at step 6 (the stop signal's checkpoint, as a requeue leaves it) and resumed in a new
  process ends with the same average as an uninterrupted run (hf_train_helper.py, two processes: the average
  is read back from checkpoint-6/ema/, with its step count);
- cluster=local, pipeline=train with evaluate: ema/ in every checkpoint (ema.json: the steps averaged), one
  result per checkpoint and weights (step-N.json, step-N-ema.json), the EMA rows apart in results.csv and in
  `launcher report`'s table."""
from __future__ import annotations

import csv
import json
import os
import subprocess
from pathlib import Path

import pytest
from hf_train_helper import tiny_train

HELPER = Path(__file__).with_name("hf_train_helper.py")


def helper_run(cpu_python: Path, folder: Path, name: str, jobs: list) -> dict:
    spec, out = folder / f"{name}.jobs.json", folder / f"{name}.results.json"
    spec.write_text(json.dumps(jobs))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SLURM_CPUS_PER_TASK": "1", "TOKENIZERS_PARALLELISM": "false"}
    p = subprocess.run([str(cpu_python), str(HELPER), "run", str(spec), str(out)], capture_output=True, text=True,
                       timeout=600, env=env)
    assert p.returncode == 0, p.stderr[-6000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_the_average_survives_a_requeue(cpu_python, tokenized, tmp_path):
    train = {**tiny_train(steps=12, every=4, seq_len=32, micro_batch=2), "ema": {"decay": 0.9}}

    def job(name, run, **kw):
        return {"kind": "train", "name": name, "train": train, "tokenizer": tokenized["tokenizer"],
                "data": {tokenized["a"]: 1.0}, "ckpt": str(tmp_path / run / "ckpt"),
                "out": str(tmp_path / run / f"out-{name}"), **kw}

    first = helper_run(cpu_python, tmp_path, "first", [job("U", "U"), job("R", "R", stop_at=6)])
    assert first["R"].get("requeue"), first["R"]
    assert json.loads((tmp_path / "R/ckpt/checkpoint-6/ema/ema.json").read_text()) == {"decay": 0.9, "steps": 6}
    second = helper_run(cpu_python, tmp_path, "second", [
        job("R2", "R", restart=1),
        {"kind": "compare", "name": "ema", "a": str(tmp_path / "U/out-U/ema"), "b": str(tmp_path / "R/out-R2/ema")},
        {"kind": "compare", "name": "raw", "a": str(tmp_path / "U/out-U/ema"), "b": str(tmp_path / "U/out-U/model")}])
    u, r = first["U"]["result"], second["R2"]["result"]
    assert u["ema"]["steps"] == r["ema"]["steps"] == 12 and u["ema"]["decay"] == 0.9, (u["ema"], r["ema"])
    for run, steps in (("U", (4, 8, 12)), ("R", (4, 6, 8, 12))):
        for n in steps:
            state = json.loads((tmp_path / run / "ckpt" / f"checkpoint-{n}" / "ema" / "ema.json").read_text())
            assert state == {"decay": 0.9, "steps": n}, (run, n, state)
    assert second["ema"]["max_abs_diff"] < 1e-6, second["ema"]  # the resumed average is the uninterrupted one
    assert second["raw"]["max_abs_diff"] > 1e-4, second["raw"]  # an average, not a copy of the last weights
    assert r["resumed_from"] == 6 and any("EMA: 6 step(s) averaged" in line for line in second["R2"]["log"])


@pytest.mark.slow
@pytest.mark.extended  # ~1 min; the CI tier scores raw and EMA in test_tracking_slurm's campaign
def test_evaluation_scores_every_checkpoint_raw_and_averaged(cli, tokenized):
    steps, t, e = 8, "pipeline.stages.train", "pipeline.stages.evaluate.evaluate"
    cli("run", "pipeline=train", "cluster=local", "model=tiny", f"{t}.train.ema.decay=0.8",
        f"pipeline.vars.data={tokenized['a']}", f"pipeline.vars.tokenizer={tokenized['tokenizer']}",
        f"{t}.train.seq_len=32", f"{t}.train.micro_batch=2", f"{t}.train.optimizer.warmup_steps=2",
        f"pipeline.vars.tokens={steps * 64}", f"pipeline.vars.checkpoint_every_tokens={steps * 32}",
        f"{e}.poll_s=1", f"{e}.max_samples=8", "campaign=ema-test")
    st = cli.wait(timeout=900)
    assert st["state"] == "COMPLETED", st
    run = cli.run_dir()
    result = json.loads((run / "stages/train/out/0/0/result.json").read_text())
    assert result["checkpoints"] == [4, 8] and result["ema"]["steps"] == 8, result
    for n in (4, 8):
        assert json.loads((run / f"stages/train/ckpt/0/checkpoint-{n}/ema/ema.json").read_text())["steps"] == n
    evals = run / "stages/evaluate/evals/0"
    assert sorted(p.name for p in evals.glob("*.json")) == ["step-4-ema.json", "step-4.json", "step-8-ema.json",
                                                             "step-8.json"]
    for n in (4, 8):
        raw, avg = (json.loads((evals / name).read_text()) for name in (f"step-{n}.json", f"step-{n}-ema.json"))
        assert raw["weights"] == "raw" and avg["weights"] == "ema" and avg["checkpoint"].endswith(f"checkpoint-{n}/ema")
        assert raw["metrics"] != avg["metrics"], (raw["metrics"], avg["metrics"])  # two models scored
    with open(run / "stages/evaluate/out/0/0/results.csv") as f:
        table = list(csv.DictReader(f))
    assert {(r["variant"], r["step"]) for r in table} == {(v, s) for v in ("all", "ema") for s in ("4", "8")}
    out = run.parent / "report-ema"
    cli("report", "latest", "--out", str(out))
    with open(out / "results.csv") as f:
        assert {r["variant"] for r in csv.DictReader(f)} == {"all", "ema"}  # two curves, kept apart
