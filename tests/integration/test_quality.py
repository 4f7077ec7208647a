"""pipeline=quality end to end on cluster=local over the offline demo corpus (jobs/demo/corpus.py): the
fastText classifier (kind=classifier) learns clean vs spam from the corpus's ground truth and is
measured on its held-out split; datatrove's FastTextClassifierFilter then removes, against that ground
truth, exactly the spam documents that reach it; `launcher inspect` shows them with their text.

The bar (precision and recall >= 0.9 for each label on the held-out split): the spam that reaches the
classifier (keyword stuffing, navigation boilerplate, lorem ipsum: spam on a banned-word URL is the URL
filter's) shares almost no vocabulary with the clean prose (standard library docstrings), so word
bigrams separate them; ~28 spam documents are held out, so 0.9 allows two mistakes per label and fails a
classifier that learned nothing (always "clean" has spam recall 0). The run measured 1.0 everywhere."""
from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import pytest

from jobs import layout
from jobs.demo.corpus import make_corpus

pytestmark = pytest.mark.slow
DOCS = 1200  # 720 clean, 180 foreign, 180 spam (~42 on a banned URL), 120 near-duplicates
BAR = 0.9


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    make_corpus(out, docs=DOCS, shards=4, seed=0)
    return out


def datatrove_part(run_dir: Path, stage: str, part: str) -> Path:
    h = next(s["hash"] for s in json.loads((run_dir / "plan.json").read_text())["stages"] if s["name"] == stage)
    return layout.datatrove_dir(run_dir, stage, h, 0, part)


def kinds_in(folder: Path) -> Counter:
    return Counter(json.loads(line)["metadata"]["kind"] for f in sorted(folder.rglob("*.jsonl.gz"))
                   for line in gzip.open(f, "rt"))


def test_quality_pipeline_trains_measures_and_filters_the_spam(cli, cpu_python, corpus):
    cli("run", "pipeline=quality", "cluster=local", f"data.source={corpus}", "wait=true", "poll_s=0.5", timeout=900)
    assert cli.status()["state"] == "COMPLETED"
    check_quality_run(cli)


def test_quality_pipeline_on_the_dev_cluster_is_one_array_job_per_stage(dcli, cpu_python, corpus):
    """The same on Slurm (written, not yet run by its author: the dev cluster was in use by other work)."""
    dcli("run", "pipeline=quality", "cluster=dev", f"data.source={corpus}", timeout=600)
    st = dcli.wait(timeout=900, poll=2)
    assert st["state"] == "COMPLETED", st
    assert [r["stage"] for r in dcli.ledger() if "job_id" in r] == ["prefilter", "classifier", "filter"]
    check_quality_run(dcli)


def check_quality_run(cli) -> None:
    """The classifier's held-out metrics over the bar; the filter against the corpus's ground truth;
    launcher inspect shows what the fastText filter removed, with its text."""
    run_dir = cli.run_dir()

    result = json.loads((layout.output_dir(run_dir, "classifier", 0, 0) / "result.json").read_text())
    held = result["held_out"]["labels"]
    assert held["spam"]["support"] >= 20 and held["clean"]["support"] >= 100, result
    for label in ("clean", "spam"):
        assert held[label]["precision"] >= BAR and held[label]["recall"] >= BAR, (label, held[label])
    assert result["unlabelled"] == 180  # foreign: no label, not trained on
    assert (layout.output_dir(run_dir, "classifier", 0, 0) / "model.bin").is_file()

    # Against the ground truth: what reached the fastText filter (after the language filter) and what it did.
    removed = datatrove_part(run_dir, "filter", "removed")
    by_classifier = kinds_in(removed / "2-FastTextClassifierFilter")
    reached = kinds_in(datatrove_part(run_dir, "prefilter", "output")) - kinds_in(removed / "1-LanguageFilter")
    kept = kinds_in(datatrove_part(run_dir, "filter", "output"))
    assert set(by_classifier) == {"spam"} and by_classifier["spam"] == reached["spam"] > 0, (by_classifier, reached)
    assert "spam" not in kept and kept["clean"] == reached["clean"] and kept["near_dup"] == reached["near_dup"]

    shown = cli("inspect", "latest", "filter", "--filter", "FastTextClassifierFilter", "--n", "3", "--format",
                "plain").stdout
    assert f"{by_classifier['spam']} document(s) removed" in shown and shown.count("spam-") == 3
    assert any(w in shown.lower() for w in ("cheap", "casino", "home", "lorem", "watches", "login")), shown


@pytest.mark.extended  # ~5 min on 2 shared cores (two tiny trainings and their evaluations)
def test_the_quality_ablation_compares_classifier_filtered_with_raw_data(cli, cpu_python, tmp_path):
    """-m pipeline=quality_ablation data=quality,raw: one classifier for both points, the quality point's
    clean stage filters with it (only spam removed by it), the raw point's keeps everything, and the
    campaign report has both variants' scores."""
    corpus = tmp_path / "corpus"
    make_corpus(corpus, docs=600, shards=2, seed=0)
    cli("run", "-m", "pipeline=quality_ablation", "data=quality,raw", "cluster=local", f"data.source={corpus}",
        "data.tasks=1", "data.minhash.num_buckets=2", "pipeline.vars.tokens=65536",
        "pipeline.vars.checkpoint_every_tokens=32768", "campaign=quality-abl", "wait=true", "poll_s=2", timeout=1500)
    assert cli.status()["state"] == "COMPLETED"
    run_dir = cli.run_dir()
    assert [p.name for p in (run_dir / "stages" / "classifier" / "out").iterdir()] == ["0"]  # trained once
    plan = json.loads((run_dir / "plan.json").read_text())
    h = next(s["hash"] for s in plan["stages"] if s["name"] == "clean")
    by_classifier = kinds_in(layout.datatrove_dir(run_dir, "clean", h, 0, "removed") / "3-FastTextClassifierFilter")
    assert set(by_classifier) == {"spam"} and by_classifier["spam"] > 0, by_classifier
    assert "spam" not in kinds_in(layout.datatrove_dir(run_dir, "clean", h, 0, "output"))
    assert sum(kinds_in(layout.datatrove_dir(run_dir, "clean", h, 1, "output")).values()) == 600  # raw
    cli("report", "quality-abl")
    rows = (cli.run_root / "reports" / "quality-abl" / "results.csv").read_text()
    assert "data=quality" in rows and "data=raw" in rows
