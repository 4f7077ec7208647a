"""Evaluation following training on the real dev Slurm: an ablation campaign of 4 runs x 3 checkpoints
gets exactly 12 results, also when one trainer is requeued mid-run and one evaluation task is
restarted; a partial checkpoint gets none; the report's signal table matches the raw results; the
filtered data variant is ahead on held-out clean text; an invalid checkpoint fails only its task."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from jobs import layout
from jobs.demo.corpus import make_corpus

from conftest import CLI, job_of, slurm, wait_for, wait_jobs_ended

pytestmark = pytest.mark.slow
STEPS, EVERY = 384, 128  # 3 checkpoints per run, 1,024 tokens per step


def results(run_dir: Path) -> list:
    return sorted(run_dir.glob("stages/evaluate/evals/*/step-*.json"))


@pytest.fixture(scope="module")
def campaign(tmp_path_factory, dev_slurm, cpu_python):
    corpus = tmp_path_factory.mktemp("corpus")
    make_corpus(corpus, docs=600, shards=2, seed=0)
    dcli = CLI(tmp_path_factory.mktemp("runs"), env=dev_slurm)
    dcli("run", "-m", "pipeline=ablation", "data=fineweb_like,raw", "seed=1,2", "cluster=dev", "campaign=abl-eval",
         f"data.source={corpus}", "data.tasks=1", "data.minhash.num_buckets=2", f"pipeline.vars.tokens={STEPS * 1024}",
         f"pipeline.vars.checkpoint_every_tokens={EVERY * 1024}", "pipeline.stages.evaluate.evaluate.poll_s=3",
         timeout=600)
    run = dcli.run_dir()
    ckpt = {p: layout.checkpoint_dir(run, "train", p) for p in range(4)}
    # A partial checkpoint (no marker) beside point 0's real ones: it must never be scored.
    wait_for(lambda: (ckpt[0] / f"checkpoint-{EVERY}" / "launcher-complete.json").exists(), 900, "a first checkpoint")
    partial = ckpt[0] / "checkpoint-200"
    partial.mkdir()
    (partial / "config.json").write_text("{}")
    # Force a requeue of trainer 1 after its first checkpoint (as a preemption would, without warning).
    wait_for(lambda: (ckpt[1] / f"checkpoint-{EVERY}" / "launcher-complete.json").exists(), 600, "checkpoint 1")
    slurm(dev_slurm, "scontrol", "requeue", f"{job_of(dcli, 'train')}_1")
    # Restart the evaluation of point 2 once it has scored something.
    wait_for(lambda: list((run / "stages/evaluate/evals/2").glob("step-*.json")), 900, "a first result of point 2")
    slurm(dev_slurm, "scontrol", "requeue", f"{job_of(dcli, 'evaluate')}_2")
    st = dcli.wait(timeout=1800, poll=5)
    assert st["state"] == "COMPLETED", st
    return dcli


def test_every_checkpoint_is_scored_exactly_once(campaign):
    run = campaign.run_dir()
    files = results(run)
    assert len(files) == 12, [str(f.relative_to(run)) for f in files]
    by_point = {p: sorted(json.loads(f.read_text())["step"] for f in files if f.parent.name == str(p)) for p in range(4)}
    assert by_point == {p: [128, 256, 384] for p in range(4)}
    # the forced requeue and the restart really happened
    h = {s["name"]: s["hash"] for s in json.loads((run / "plan.json").read_text())["stages"]}
    assert json.loads(layout.marker_path(run, "train", h["train"], 1).read_text())["restarts"] >= 1
    assert json.loads(layout.marker_path(run, "evaluate", h["evaluate"], 2).read_text())["restarts"] >= 1
    assert not any("200" in f.name for f in files)  # the partial checkpoint got nothing
    for p in range(4):  # the per-run table has every result
        table = layout.output_dir(run, "evaluate", p, 0) / "results.csv"
        assert table.read_text().count(f"\n{'abl-eval'}") >= 3


def test_report_table_matches_the_raw_results(campaign):
    out = campaign.run_root / "report"
    campaign("report", "abl-eval", "--out", str(out), "--root", str(campaign.run_root))
    html = (out / "index.html").read_text()
    assert "data=fineweb_like" in html and "data=raw" in html
    signal = {(s["task"], s["metric"]): s for s in json.loads((out / "signal.json").read_text())}
    raw = [json.loads(f.read_text()) for f in results(campaign.run_dir())]
    for (task, metric), s in signal.items():
        finals = {}
        for r in raw:
            if r["step"] == STEPS:
                finals.setdefault(r["variant"], []).append(r["metrics"][task][metric])
        stds = [statistics.stdev(v) for v in finals.values() if len(v) > 1]
        assert s["seed_std"] == pytest.approx(statistics.mean(stds), rel=1e-6)
    assert len(list(out.glob("plots/*.png"))) == len(signal)  # one plot per metric


def test_the_filtered_variant_is_ahead_on_held_out_clean_text(campaign):
    raw = [json.loads(f.read_text()) for f in results(campaign.run_dir())]
    final = {}
    for r in raw:
        if r["step"] == STEPS:
            final.setdefault(r["variant"], []).append(r["metrics"]["clean_bpb"]["bits_per_byte"])
    bpb = {v: statistics.mean(ms) for v, ms in final.items()}
    assert bpb["data=fineweb_like"] < bpb["data=raw"], bpb


def test_an_invalid_checkpoint_fails_only_its_evaluation_task(dcli, dev_slurm, cpu_python, tmp_path):
    """Train two seeds with an evaluation stage, then plant a 'checkpoint' with a marker but no model
    into run 0, and let resume back-fill: run 0's evaluation fails naming the folder, run 1's
    completes, and no result is written twice."""
    import subprocess

    from conftest import ROOT

    data = tmp_path / "data"
    subprocess.run([str(cpu_python), str(ROOT / "tests" / "integration" / "hf_train_helper.py"), "data", str(data)],
                   check=True, capture_output=True, timeout=600)
    info = json.loads((data / "data.json").read_text())
    dcli("run", "-m", "pipeline=train", "cluster=dev", "seed=1,2", f"pipeline.vars.data={info['a']}",
         f"pipeline.vars.tokenizer={info['tokenizer']}", "pipeline.vars.tokens=32768",
         "pipeline.vars.checkpoint_every_tokens=16384", "pipeline.stages.evaluate.evaluate.poll_s=2",
         "pipeline.stages.evaluate.evaluate.max_samples=20")
    assert dcli.wait(timeout=600)["state"] == "COMPLETED"
    run = dcli.run_dir()
    before = results(run)
    assert len(before) == 4  # 2 runs x 2 checkpoints

    wait_jobs_ended(dcli, dev_slurm)  # else resume may see the evaluation's job still finishing
    bogus = layout.checkpoint_dir(run, "train", 0) / "checkpoint-64"
    bogus.mkdir()
    (bogus / "launcher-complete.json").write_text(json.dumps({"step": 64, "tokens": 65536, "reason": "interval"}))
    h = {s["name"]: s["hash"] for s in json.loads((run / "plan.json").read_text())["stages"]}
    for p in (0, 1):
        layout.marker_path(run, "evaluate", h["evaluate"], p).unlink()
    dcli("resume", "latest")
    st = dcli.wait(timeout=600)
    counts = {s["name"]: s["tasks"] for s in st["stages"]}
    assert counts["evaluate"]["failed"] == 1 and counts["evaluate"]["completed"] == 1, counts
    failure = json.loads(layout.marker_path(run, "evaluate", h["evaluate"], 0, "failed").read_text())["error"]
    assert f"{bogus} is not a model checkpoint" in failure, failure[-1500:]
    assert results(run) == before  # nothing scored twice, nothing for the bogus folder
