"""Acceptance of the datatrove data stage on the real dev Slurm, over the offline demo corpus: every
block runs as array jobs, each filter removes what it should, a killed rank is rerun alone by
`resume` and the tokens come out byte-identical, and a recipe naming a missing block is refused."""
from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from jobs import layout
from jobs.demo.corpus import make_corpus

from conftest import CLI, slurm

pytestmark = pytest.mark.slow
DOCS = 600  # 360 clean, 90 foreign, 90 spam, 60 near-duplicates


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    make_corpus(out, docs=DOCS, shards=4, seed=0)
    return out


def data_run(dcli, corpus, *extra):
    return dcli("run", "pipeline=data", "data=fineweb_like", "cluster=dev", f"data.source={corpus}", *extra,
                timeout=600)


def stage_folder(run_dir: Path, stage: str, part: str) -> Path:
    plan = json.loads((run_dir / "plan.json").read_text())
    h = next(s["hash"] for s in plan["stages"] if s["name"] == stage)
    return layout.datatrove_dir(run_dir, stage, h, 0, part)


def docs_in(folder: Path) -> list:
    return [json.loads(line) for f in sorted(folder.rglob("*.jsonl.gz")) for line in gzip.open(f, "rt")]


def kinds(docs) -> Counter:
    return Counter(d["metadata"]["kind"] for d in docs)


def tokens_digest(run_dir: Path) -> str:
    """sha256 over the merged token files (.ds and .ds.index; .metadata names the run's tokenizer path)."""
    h = hashlib.sha256()
    files = sorted(f for f in stage_folder(run_dir, "merge", "output").iterdir() if f.suffix in (".ds", ".index"))
    assert files, "merge wrote no token files"
    for f in files:
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def finished(tmp_path_factory, dev_slurm, cpu_python, corpus):
    """One uninterrupted fineweb_like run (shared by the checks below)."""


    root = tmp_path_factory.mktemp("runs")
    dcli = CLI(root, env=dev_slurm)
    data_run(dcli, corpus)
    st = dcli.wait(timeout=900, poll=2)
    assert st["state"] == "COMPLETED", st
    return dcli


def test_every_block_runs_as_array_jobs_minhash_as_four(finished, dev_slurm):
    ids = {r["stage"]: r["job_id"] for r in finished.ledger() if "job_id" in r}
    assert list(ids) == ["clean", "dedup.signatures", "dedup.buckets", "dedup.clusters", "dedup.filter",
                         "tokenizer", "tokenize", "merge"]
    out = slurm(dev_slurm, "sacct", "-n", "-P", "-X", "-o", "JobID,JobName%80,State", "-j", ",".join(ids.values()))
    rows = [line.split("|") for line in out.splitlines()]
    names = {name.split(".", 1)[1] for _, name, _ in rows}  # job names are <run id>.<stage>
    assert {"dedup.signatures", "dedup.buckets", "dedup.clusters", "dedup.filter"} <= names
    per_stage = Counter(name.split(".", 1)[1] for _, name, state in rows if state == "COMPLETED")
    assert per_stage["dedup.buckets"] == 14 and per_stage["dedup.clusters"] == 1 and per_stage["clean"] == 4


def test_filters_remove_foreign_spam_and_near_duplicates_in_expected_proportions(finished):
    run_dir = finished.run_dir()
    removed = {d.name.split("-", 1)[1]: kinds(docs_in(d)) for d in stage_folder(run_dir, "clean", "removed").iterdir()}
    cleaned = kinds(docs_in(stage_folder(run_dir, "clean", "output")))
    # Every non-English document goes at the language filter; every spam page before dedup.
    assert removed["LanguageFilter"]["foreign"] == 90 and cleaned["foreign"] == 0
    assert sum(r["spam"] for r in removed.values()) == 90 and cleaned["spam"] == 0
    assert removed["URLFilter"]["spam"] > 0 and removed["GopherRepetitionFilter"]["spam"] > 0
    # Clean prose survives the quality filters (a few short docstring pages do not).
    assert cleaned["clean"] >= 0.9 * 360, cleaned
    # MinHash removes one document of each planted near-duplicate pair and nothing else.
    final = docs_in(stage_folder(run_dir, "dedup.filter", "output"))
    dropped = docs_in(stage_folder(run_dir, "dedup.filter", "removed"))
    ids = {d["id"] for d in final}
    pairs = [d for d in final + dropped if d["metadata"]["kind"] == "near_dup" and d["metadata"]["dup_of"] in
             {x["id"] for x in final + dropped}]
    assert len(dropped) == len(pairs) >= 0.9 * cleaned["near_dup"], (len(dropped), len(pairs))
    assert not any(d["id"] in ids and d["metadata"]["dup_of"] in ids for d in pairs)

    # The summary reports the same numbers, per block.
    summary = json.loads(finished("summary", "latest", "--json").stdout)
    blocks = {b["block"]: b for b in summary["clean"]["0"]["blocks"]}
    lang = next(b for name, b in blocks.items() if "Language" in name)
    assert lang["removed"] == sum(removed["LanguageFilter"].values())
    assert summary["dedup.filter"]["0"]["blocks"][1]["removed"] == len(dropped)
    reader = summary["clean"]["0"]["blocks"][0]
    assert reader["out"] == DOCS and summary["clean"]["0"]["ranks"] == 4


def test_tokens_load_with_datatrove_and_match_the_summary(finished, cpu_python):
    run_dir = finished.run_dir()
    summary = json.loads(finished("summary", "latest", "--json").stdout)
    merged = summary["merge"]["0"]["blocks"][0]["tokens"]
    tokenized = sum(b["tokens"] or 0 for b in summary["tokenize"]["0"]["blocks"])
    assert merged == tokenized > 10_000
    check = summary["tokenizer"]["0"]["tokenizer_check"]  # the tokenizer's data check, also in the task log
    assert check["vocab_size"] == 4096 and len(check["longest"]) == 15 and check["rarest"][0][1] >= 1
    assert "longest:" in finished("summary", "latest").stdout
    folder = stage_folder(run_dir, "merge", "output")
    tokenizer = stage_folder(run_dir, "tokenizer", "output") / "tokenizer.json"
    code = f"""
import json
from datatrove.utils.dataset import DatatroveFolderDataset
from tokenizers import Tokenizer
ds = DatatroveFolderDataset({str(folder)!r}, seq_len=64, filename_pattern="*.ds", token_size=2)
first = ds[0]["input_ids"].tolist()
print(json.dumps({{"samples": len(ds), "text": Tokenizer.from_file({str(tokenizer)!r}).decode(first)}}))
"""
    p = subprocess.run([str(cpu_python), "-c", code], capture_output=True, text=True, timeout=300,
                       env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert p.returncode == 0, p.stderr[-3000:]
    got = json.loads(p.stdout.strip().splitlines()[-1])
    assert got["samples"] == merged // 65  # samples are windows of seq_len + 1 tokens
    assert sum(f.stat().st_size for f in folder.glob("*.ds")) == 2 * merged  # uint16 tokens
    assert len(got["text"].split()) > 10  # decodes back to words


def test_inspect_shows_what_a_named_filter_removed(finished):
    removed = docs_in(stage_folder(finished.run_dir(), "clean", "removed") / "2-LanguageFilter")
    out = finished("inspect", "latest", "clean", "--filter", "LanguageFilter", "--removed", "--n", "3").stdout
    assert f"2-LanguageFilter: {len(removed)} document(s) removed; 3 at random" in out
    assert out.count('"kind": "foreign"') + out.count('"kind": "spam"') == 3  # lorem ipsum is not English either
    kept = finished("inspect", "latest", "clean", "--filter", "LanguageFilter", "--kept", "--n", "5").stdout
    assert "foreign-" not in kept and kept.count('"kind": ') == 5


def test_no_rank_reaches_for_the_network(finished):
    """URLFilter's tldextract would fetch the Public Suffix List (a failed request and a traceback per rank
    on an offline node): the data stage uses tldextract's bundled snapshot instead."""
    logs = [f for f in finished.run_dir().rglob("*.err")] + [f for f in finished.run_dir().rglob("*.out")]
    assert logs, "the run wrote no task logs"
    noisy = [str(f) for f in logs if "publicsuffix" in f.read_text(errors="replace").lower()]
    assert not noisy, noisy


def test_killed_rank_is_rerun_alone_and_tokens_are_byte_identical(dcli, dev_slurm, corpus, finished):
    """scancel one rank of the filtering stage while it runs; resume reruns that rank (and what waited
    on it); the final tokens hash the same as the uninterrupted run's."""
    data_run(dcli, corpus, "data.throttle=1")  # one rank at a time: rank 2 runs alone, long enough to hit
    run_dir = dcli.run_dir()
    markers = run_dir / "stages" / "clean" / "markers"
    deadline = time.time() + 300
    victim = None
    while victim is None and time.time() < deadline:
        running = [p.name for p in markers.rglob("2.running-*")] if markers.exists() else []
        if running:
            victim = running[0].split("running-", 1)[1]  # <jobid>_<index>
        time.sleep(0.05)
    assert victim, "rank 2 of clean never started"
    slurm(dev_slurm, "scancel", victim)
    st = dcli.wait(timeout=600, poll=2)
    clean = next(s for s in st["stages"] if s["name"] == "clean")["tasks"]
    assert st["state"] == "FAILED" and clean["cancelled"] == 1 and clean["completed"] == 3, st

    before = len(dcli.ledger())
    dcli("resume", "latest")
    new = dcli.ledger()[before:]
    assert (new[0]["stage"], new[0]["tasks"]) == ("clean", [2])
    assert dcli.wait(timeout=900, poll=2)["state"] == "COMPLETED"
    assert tokens_digest(run_dir) == tokens_digest(finished.run_dir())


def test_recipe_with_missing_block_is_refused_before_anything_is_queued(dcli, corpus, cpu_python):
    p = dcli("run", "pipeline=data", "data=fineweb_like", "cluster=dev", f"data.source={corpus}",
             "+data.filters.bogus={_target_: datatrove.pipeline.filters.NoSuchFilter}", check=False, timeout=600)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "stage 'clean': pipeline.stages.clean.blocks.7._target_: datatrove.pipeline.filters.NoSuchFilter " \
           "not found in environment 'cpu'" in p.stderr, p.stderr
    assert "nothing was submitted" in p.stderr
    assert not any(dcli.run_root.glob("*/submissions.jsonl"))
