"""kind=cluster end to end (pipeline=topics: the demo corpus -> TF-IDF + SVD, faiss k-means, SemDeDup),
sharded: tasks=3, so the plan runs topics_fit (1 task) -> topics_assign (3 array tasks) -> topics (1 task),
checked against the corpus's ground truth (jobs/demo/corpus.py: metadata.kind, and metadata.dup_of on each
near-duplicate naming its original):
  - every near-duplicate lands in the same cluster as its original;
  - SemDeDup at the pipeline's threshold (0.95) removes all but one of each group of an original and its
    near-duplicates (one of each pair; two of a triple);
  - false positives: at most 2% of the clean documents that are in no such group are removed (measured: 0
    of 304 at 600 documents, k=8, dims=128);
  - every document went through exactly one of the 3 assign shards;
  - `launcher summary` and `launcher inspect` read the stage like a datatrove stage.
Spam templates (lorem ipsum, keyword lists, navigation) and foreign documents drawn from one small pool of
sentences per language are near-copies of one another too: SemDeDup removes most of them, as it should;
no bound is put on those kinds. ~60 s on 2 shared cores (most of it the five tasks' starts and imports)."""
from __future__ import annotations

import gzip
import json
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from conftest import ROOT

CPU_PYTHON = ROOT / ".envs" / "cpu" / "bin" / "python"

FP_BOUND = 0.02  # removed clean documents outside every near-duplicate group, as a share of them
SHARDS = 3  # the assign part's array tasks


def rows(folder: Path):
    for f in sorted(folder.rglob("*.jsonl.gz")):
        with gzip.open(f, "rt") as fh:
            yield from (json.loads(x) for x in fh if x.strip())


def rows_of(path: Path):
    with gzip.open(path, "rt") as fh:
        return [json.loads(x) for x in fh if x.strip()]


def datatrove(run_dir: Path, stage: str, part: str) -> Path:
    (folder,) = (run_dir / "stages" / stage / "datatrove").glob(f"*/0/{part}")
    return folder


def check_against_truth(run_dir: Path) -> dict:
    corpus = list(rows(run_dir / "stages" / "corpus" / "out" / "0" / "0"))
    kind = {d["id"]: d["metadata"]["kind"] for d in corpus}
    groups: dict = {}
    for d in corpus:
        if d["metadata"].get("dup_of"):
            groups.setdefault(d["metadata"]["dup_of"], {d["metadata"]["dup_of"]}).add(d["id"])
    assert groups, "the corpus has no near-duplicates"
    own = run_dir / "stages" / "topics" / "out" / "0" / "0"
    with gzip.open(own / "clusters.jsonl.gz", "rt") as fh:
        assigned = {r["id"]: r for r in map(json.loads, fh)}
    assert set(assigned) == set(kind)
    for original, members in groups.items():
        assert len({assigned[m]["cluster"] for m in members}) == 1, f"{sorted(members)} split over clusters"
        kept = [m for m in members if assigned[m]["kept"]]
        assert len(kept) == 1, f"group {sorted(members)} kept {kept}"

    kept_docs = list(rows(datatrove(run_dir, "topics", "output")))
    removed_docs = list(rows(datatrove(run_dir, "topics", "removed") / "0-SemDeDup"))
    assert {d["id"] for d in kept_docs} == {i for i, r in assigned.items() if r["kept"]}
    assert {d["id"] for d in removed_docs} == {i for i, r in assigned.items() if not r["kept"]}
    for d in removed_docs:  # each names the kept document it duplicates, in its own cluster
        assert assigned[d["metadata"]["semdedup_of"]]["kept"]
        assert assigned[d["metadata"]["semdedup_of"]]["cluster"] == d["metadata"]["cluster"]
        assert d["metadata"]["semdedup_similarity"] > 0.95

    in_groups = set().union(*groups.values())
    clean = [i for i, k in kind.items() if k == "clean" and i not in in_groups]
    false_pos = [i for i in clean if not assigned[i]["kept"]]
    assert len(false_pos) <= FP_BOUND * len(clean), (len(false_pos), len(clean), false_pos[:10])

    shard_ids = [d["id"] for i in range(SHARDS) for d in rows_of(datatrove(run_dir, "topics_assign", "output") /
                                                                 f"{i:05d}.jsonl.gz")]
    assert sorted(shard_ids) == sorted(kind), "each document in exactly one assign shard"

    result = json.loads((own / "result.json").read_text())
    assert result["documents"] == len(corpus) and result["removed"] == len(removed_docs)
    assert result["shards"] == SHARDS and result["kmeans"]["library"] == "faiss"
    assert sum(result["cluster_sizes"]) == len(corpus) and len(result["cluster_sizes"]) == 8
    assert result["documents_per_s"] > 0
    topics = json.loads((own / "topics.json").read_text())
    assert all(t["label"] for t in topics if t["size"]) and (own / "topic_map.png").read_bytes()[:4] == b"\x89PNG"
    return {"removed": Counter(kind[d["id"]] for d in removed_docs), "false_positives": len(false_pos)}


def test_topics_on_the_demo_corpus_locally(cli):
    cli("run", "pipeline=topics", "cluster=local", f"pipeline.stages.topics.tasks={SHARDS}")
    assert cli.wait(timeout=600)["state"] == "COMPLETED"
    run_dir = cli.run_dir()
    facts = check_against_truth(run_dir)
    assert facts["removed"]["near_dup"] + facts["removed"]["clean"] >= 50  # 600 docs: 60 near-duplicates

    summary = cli("summary", "latest").stdout
    assert "SemDeDup" in summary
    shown = cli("inspect", "latest", "topics", "--filter", "SemDeDup", "--removed", "--n", "2").stdout
    assert "0-SemDeDup" in shown and "semdedup_of" in shown


@pytest.mark.extended
def test_one_task_and_three_shards_give_the_same_clusters_and_documents(cli):
    """tasks: 1 and tasks: 3 on the same corpus and seed: the same id -> (cluster, kept) and the same kept
    documents in the same order (each embedding row depends on its own text only; the last part restores
    the input order). ~50 s: two runs (the second reuses the corpus and the fit from the first)."""
    seen = []
    for tasks in (1, SHARDS):
        cli("run", "pipeline=topics", "cluster=local", f"pipeline.stages.topics.tasks={tasks}")
        assert cli.wait(timeout=600)["state"] == "COMPLETED"
        run_dir = cli.run_dir()
        own = run_dir / "stages" / "topics" / "out" / "0" / "0"
        seen.append((rows_of(own / "clusters.jsonl.gz"),
                     [d["id"] for d in rows(datatrove(run_dir, "topics", "output"))]))
    assert seen[0] == seen[1] and len(seen[0][0]) == 600


def test_topics_on_the_dev_cluster(dcli, dev_slurm):
    """The same pipeline, sharded the same way, submitted to the dev cluster (written, not run by its author:
    the dev cluster was in use by another session)."""
    dcli("run", "pipeline=topics", "cluster=dev", f"pipeline.stages.topics.tasks={SHARDS}", timeout=600)
    assert dcli.wait(timeout=900)["state"] == "COMPLETED"
    check_against_truth(dcli.run_dir())


@pytest.mark.slow
@pytest.mark.extended
def test_a_local_model_embeds_the_documents(cli, tmp_path):
    """embedding: {model: <folder>} on the random tiny Llama of jobs/demo/tiny_model.py (mean pooling in the
    cpu environment): the mechanics only, a random model's clusters mean nothing. ~2 min on 2 shared cores."""
    if not CPU_PYTHON.exists():
        pytest.skip("the cpu stage environment is not built (scripts/setup --envs)")
    model = tmp_path / "model"
    subprocess.run([str(CPU_PYTHON), "-m", "jobs.demo.tiny_model", str(model)], cwd=ROOT, check=True,
                   capture_output=True, timeout=600)
    cli("run", "pipeline=topics", "cluster=local", "pipeline.vars.docs=200", "pipeline.vars.k=4",
        f"pipeline.stages.topics.cluster.embedding={{model:{model},batch_size:16,max_length:64}}")
    assert cli.wait(timeout=900)["state"] == "COMPLETED"
    result = json.loads((cli.run_dir() / "stages" / "topics" / "out" / "0" / "0" / "result.json").read_text())
    assert result["embedding"] == "model" and result["dims"] == 128  # the model's hidden size
    assert result["documents"] == 200 and sum(result["cluster_sizes"]) == 200 and len(result["cluster_sizes"]) == 4
