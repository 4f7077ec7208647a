"""pipeline=synthetic (issue 22 item 4, docs/synthetic.md): a tiny generator model writes a synthetic corpus
with vLLM, its generations become datatrove documents and tokens, and two small models train on the web
tokens alone (synthetic_weight=0) and mixed with the synthetic ones (0.25); both are evaluated and
`launcher report` names both variants.

- the whole sweep on cluster=local from the README's set-up (no network): extended (~7 min on 2 shared
  cores: the data chain, the generator's training, vLLM starting once, two trainings and evaluations);
- the new step alone (generations -> documents -> tokens -> the mix at a weight), on the pipeline's own
  stage definitions with the stages before it removed and a generations folder written here: local (~1 min);
- the sweep on the dev cluster (written by its author without the cluster: not yet run)."""
from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pytest

from jobs import layout

pytestmark = pytest.mark.slow
S = "pipeline.stages"
SWEEP = ["-m", "pipeline=synthetic", "pipeline.vars.synthetic_weight=0,0.25", "data.tasks=2",
         "data.minhash.num_buckets=2"]
PROMPTS = 32


def result(run_dir: Path, stage: str, point: int = 0, task: int = 0) -> dict:
    return json.loads((layout.output_dir(run_dir, stage, point, task) / "result.json").read_text())


def stat(res: dict, block: str, key: str) -> int:
    """A datatrove block's counter from a preprocess task's result.json (its stats list; a block's name is
    e.g. "💽 - WRITER: 🐿 Jsonl", "🔢 - TOKENIZER: ✍️ Writer")."""
    for s in res["stats"]:
        if block in s["name"]:
            v = s["stats"].get(key, 0)
            return int(v["total"] if isinstance(v, dict) else v)
    raise AssertionError(f"no {block} stats in {res}")


def check_mix(run_dir: Path, weights: dict) -> None:
    """train's result.json `data` of each point: the weights as configured, the drawn share of the synthetic
    folder near weight / (1 + weight) (binomial, 4 sd), nothing drawn at weight 0."""
    for point, w in weights.items():
        rows = result(run_dir, "train", point)["data"]
        assert [r["weight"] for r in rows] == [1.0, w], rows
        web, syn = rows
        drawn = web["drawn"] + syn["drawn"]
        share = w / (1 + w)
        assert syn["share"] == pytest.approx(share, abs=1e-6)
        assert abs(syn["drawn"] - share * drawn) <= 4 * (drawn * share * (1 - share)) ** 0.5 + 1e-9, rows
        assert syn["drawn_tokens"] == syn["drawn"] * 128 and (syn["drawn"] == 0) == (w == 0)


def check_synthetic_run(cli) -> None:
    """Every stage COMPLETED; the synthetic documents exist and are counted (generate -> docs -> tokens);
    the mix follows the weight; the report names both variants; a resume submits nothing."""
    st = cli.status()
    assert st["state"] == "COMPLETED" and all(s["state"] == "COMPLETED" for s in st["stages"]), st
    run_dir = cli.run_dir()
    gen = result(run_dir, "synth")
    assert gen["requests"] == PROMPTS and gen["completion_tokens"] >= 32 * PROMPTS, gen
    lines = (layout.output_dir(run_dir, "synth", 0, 0) / "generations.jsonl").read_text().splitlines()
    assert len({json.loads(x)["id"] for x in lines}) == PROMPTS

    docs = result(run_dir, "synthetic_docs")
    assert stat(docs, "WRITER", "total") == PROMPTS, docs
    written = list(Path(docs["output"]).rglob("*.jsonl.gz"))
    assert written, "no synthetic documents"
    tokens = stat(result(run_dir, "synthetic_tokens"), "TOKENIZER", "tokens")
    assert tokens >= gen["completion_tokens"] // 2, (tokens, gen)  # retokenized text (+ EOS per document)
    check_mix(run_dir, {0: 0.0, 1: 0.25})

    cli("report", "latest")
    csv = next((cli.run_root / "reports").rglob("results.csv")).read_text()
    assert "pipeline.vars.synthetic_weight=0.25" in csv and "pipeline.vars.synthetic_weight=0," in csv, csv[:500]

    before = len(cli.ledger())
    assert "nothing to resume" in cli("resume", "latest").stdout and len(cli.ledger()) == before


@pytest.mark.extended
def test_the_synthetic_ablation_runs_on_the_local_backend(cli, cpu_python):
    cli("run", *SWEEP, "cluster=local", "wait=true", "poll_s=2", timeout=1800)
    check_synthetic_run(cli)


@pytest.mark.extended  # ~10 min on 2 cores: the CI tier keeps the step's own test below
def test_the_synthetic_ablation_on_the_dev_cluster(dcli, cpu_python):
    """The same on Slurm: one array job per stage (the dedup sub-stages one each), 2 points of train."""
    dcli("run", *SWEEP, "cluster=dev", timeout=600)
    st = dcli.wait(timeout=1800, poll=5)
    assert st["state"] == "COMPLETED", st
    check_synthetic_run(dcli)


# -- the new step alone ----------------------------------------------------------------------------------
BEFORE = ("corpus", "clean", "dedup", "tokenizer", "tokenize", "merge", "generator", "synth", "evaluate")


def write_generations(folder: Path, n: int = 40) -> Path:
    """generate's output layout: <task>/generations.jsonl, one request per line, the text in `completion`."""
    rng = random.Random(0)
    words = "the water cycle moves rain from sea to cloud and back again while prime numbers stay".split()
    (folder / "0").mkdir(parents=True)
    with open(folder / "0" / "generations.jsonl", "w") as f:
        for i in range(n):
            text = " ".join(rng.choice(words) for _ in range(80)) + "."
            f.write(json.dumps({"id": f"seed-{i}", "prompt": "Write ...", "completion": text, "completion_tokens": 80,
                                "input": {"topic": "the water cycle"}}) + "\n")
    return folder


def test_generations_become_counted_documents_and_tokens_mixed_at_the_weight(cli, cpu_python, tokenized, tmp_path):
    gens = write_generations(tmp_path / "gens")
    cli("run", "pipeline=synthetic", "cluster=local", *[f"~{S}.{s}" for s in BEFORE],
        f"~{S}.synthetic_docs.after.synth", f"{S}.synthetic_docs.blocks.0.data_folder={gens}",
        f"~{S}.synthetic_tokens.after.tokenizer", f"{S}.synthetic_tokens.blocks.1.tokenizer_name_or_path="
        f"{tokenized['tokenizer']}", f"~{S}.train.after.merge", f"~{S}.train.after.tokenizer",
        f"{S}.train.train.data.0.folder={tokenized['a']}", f"{S}.train.train.tokenizer={tokenized['tokenizer']}",
        "pipeline.vars.tokens=16384", "pipeline.vars.checkpoint_every_tokens=16384", "wait=true", "poll_s=1",
        timeout=600)
    st = cli.status()
    assert st["state"] == "COMPLETED" and [s["name"] for s in st["stages"]] == \
        ["synthetic_docs", "synthetic_tokens", "train"], st
    run_dir = cli.run_dir()
    assert stat(result(run_dir, "synthetic_docs"), "WRITER", "total") == 40
    docs = sorted(Path(result(run_dir, "synthetic_docs")["output"]).rglob("*.jsonl.gz"))
    doc = json.loads(gzip.open(docs[0], "rt").readline())
    assert doc["id"] == "seed-0" and doc["metadata"]["input"] == {"topic": "the water cycle"} and len(doc["text"]) > 100
    assert stat(result(run_dir, "synthetic_tokens"), "TOKENIZER", "tokens") > 1032  # 8 samples of 129
    check_mix(run_dir, {0: 0.25})
