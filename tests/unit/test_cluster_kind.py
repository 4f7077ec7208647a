"""kind=cluster without a stage environment: the expansion into fit -> assign -> dedup stages and the
config checks (pipeline=topics), the SemDeDup rule on small hand-made embeddings (jobs/runtime/semdedup.py:
numpy only), k larger than the data at the fit task's start, and the PNG writer. End to end on the demo
corpus, sharded: tests/integration/test_cluster.py (-m local)."""
from __future__ import annotations

import gzip
import json
import struct
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from jobs.kinds import cluster as runner
from jobs.runtime import png, semdedup
from launcher.config.compose import compose
from launcher.errors import LauncherError
from launcher.plan.model import build_plan


def plan_of(*overrides):
    return build_plan([compose(["pipeline=topics", "cluster=local", *overrides])], [[]])


def errors_of(*overrides) -> str:
    with pytest.raises(LauncherError) as e:
        plan_of(*overrides)
    return str(e.value)


# -- config checks ---------------------------------------------------------------------------------

def test_the_topics_pipeline_plans_fit_assign_and_dedup_stages_in_the_cpu_environment():
    plan = plan_of("pipeline.stages.topics.tasks=3")
    assert list(plan.stages) == ["corpus", "topics_fit", "topics_assign", "topics"]
    fit, assign, last = (plan.stages[n] for n in ("topics_fit", "topics_assign", "topics"))
    assert (fit.tasks_per_point, assign.tasks_per_point, last.tasks_per_point) == (1, 3, 1)
    assert [(d.parent, d.kind) for d in fit.deps] == [("corpus", "afterok")]
    assert [(d.parent, d.kind) for d in assign.deps] == [("topics_fit", "afterok")]
    assert [(d.parent, d.kind) for d in last.deps] == [("topics_assign", "afterok")]
    assert [s.payloads[0]["cluster"]["step"]["part"] for s in (fit, assign, last)] == ["fit", "assign", "dedup"]
    assert last.payloads[0]["cluster"]["step"] == {"part": "dedup", "stage": "topics", "fit": "topics_fit",
                                                    "assign": "topics_assign", "shards": 3}
    assert all(s.kind == "cluster" and s.payloads[0]["cluster"]["embedding"] == "tfidf" for s in (fit, assign, last))
    assert all(s.environment["python"].endswith(".envs/cpu/bin/python") for s in (fit, assign, last))


def test_a_bare_input_means_the_written_stages_parent_in_every_part():
    plan = plan_of("pipeline.stages.topics.cluster.input='{input}'")
    assert {plan.stages[n].payloads[0]["cluster"]["input"] for n in ("topics_fit", "topics_assign", "topics")} == {
        "{input:corpus}"}


def test_a_stage_reading_the_cluster_stage_reads_its_kept_documents():
    plan = plan_of("+pipeline.stages={next: {kind: command, command: 'ls', after: {topics: afterok}}}")
    assert [d.parent for d in plan.stages["next"].deps] == ["topics"] and "topics_fit" in plan.stages


def test_a_bare_input_without_exactly_one_parent_is_refused_before_expansion():
    from launcher.errors import ConfigError
    from launcher.kinds import Problems, cluster as kind

    errors: list[ConfigError] = []
    kind.KIND.check_before_expansion(Problems("topics", errors), {"tasks": 2, "after": {}, "cluster": {"input": "{input}"}})
    (err,) = errors
    assert err.key == "pipeline.stages.topics.cluster.input" and "exactly one stage in `after` (has 0)" in str(err)


def test_a_stage_named_like_a_part_collides():
    err = errors_of("+pipeline.stages={topics_fit: {kind: command, command: 'true'}}")
    assert "topics_fit" in err and "expands into" in err


@pytest.mark.parametrize("override, key, message", [
    ("pipeline.vars.k=1", "cluster.k", "must be >= 2"),
    ("pipeline.vars.k=0", "cluster.k", "must be >= 2"),
    ("pipeline.vars.threshold=0", "cluster.semdedup.threshold", "in (0, 1], got 0"),
    ("pipeline.vars.threshold=1.5", "cluster.semdedup.threshold", "in (0, 1], got 1.5"),
    ("pipeline.vars.threshold=-0.2", "cluster.semdedup.threshold", "in (0, 1]"),
    ("pipeline.stages.topics.cluster.embedding=bert", "cluster.embedding", "unknown embedding 'bert'"),
    ("+pipeline.stages.topics.cluster.embedding={batch_size:4}", "cluster.embedding", "needs model"),
    ("pipeline.stages.topics.cluster.embedding={model:/m,pooling:cls}", "cluster.embedding", "unknown key"),
    ("pipeline.stages.topics.cluster.dims=1", "cluster.dims", "must be >= 2"),
    ("pipeline.stages.topics.cluster.sample=4", "cluster.sample", "at least k=8"),
    ("pipeline.stages.topics.tasks=0", "tasks", "must be >= 1, got 0"),
])
def test_bad_settings_are_refused_naming_stage_and_key(override, key, message):
    err = errors_of(override)
    assert f"pipeline.stages.topics.{key}" in err and "topics" in err and message in err


def test_threshold_one_and_a_model_embedding_are_accepted():
    plan = plan_of("pipeline.vars.threshold=1", "pipeline.stages.topics.cluster.embedding={model:/some/model}")
    assert plan.stages["topics"].payloads[0]["cluster"]["embedding"] == {"model": "/some/model"}


def test_preflight_names_a_missing_model_folder(tmp_path):
    from launcher.kinds import cluster as kind

    plan = plan_of(f"pipeline.stages.topics.cluster.embedding={{model:{tmp_path}/none}}")
    errors = kind.KIND.preflight(plan, plan.stages["topics"])
    assert [e.key for e in errors] == ["pipeline.stages.topics.cluster.embedding.model"]
    (tmp_path / "none").mkdir()
    assert "no config.json" in str(kind.KIND.preflight(plan, plan.stages["topics"])[0])


def test_preflight_counts_the_documents_of_a_plain_input_against_k(tmp_path):
    from launcher.kinds import cluster as kind

    data = tmp_path / "docs"
    data.mkdir()
    with gzip.open(data / "00000.jsonl.gz", "wt") as f:
        f.write("".join(json.dumps({"text": f"t{i}"}) + "\n" for i in range(5)) + "\n")
    plan = plan_of(f"pipeline.stages.topics.cluster.input={data}")
    (err,) = kind.KIND.preflight(plan, plan.stages["topics"])
    assert err.key == "pipeline.stages.topics.cluster.k" and "holds 5 document(s): use k <= 5" in str(err)
    assert kind.count_documents(str(data), limit_bytes=10) is None  # too big to count here: the task checks
    five = plan_of(f"pipeline.stages.topics.cluster.input={data}", "pipeline.vars.k=5")
    assert kind.KIND.preflight(five, five.stages["topics"]) == []


# -- the dedup rule --------------------------------------------------------------------------------

def unit(*angles_deg):
    """2-D unit vectors at these angles: cos(a - b) is their similarity."""
    a = np.radians(angles_deg)
    return np.stack([np.cos(a), np.sin(a)], axis=1)


def test_a_near_duplicate_is_removed_and_the_first_of_the_pair_kept():
    emb = unit(0, 90, 5)  # cos 5 deg = 0.996
    keep, dup_of, sim = semdedup.semdedup(emb, [0, 0, 0], threshold=0.99)
    assert keep.tolist() == [True, True, False]
    assert dup_of.tolist() == [-1, -1, 0] and sim[2] == pytest.approx(np.cos(np.radians(5)), abs=1e-6)


def test_siblings_two_copies_of_one_original_both_go_and_the_original_stays():
    emb = unit(0, 3, -3, 60)  # copies at +-3 deg (similar to each other too: cos 6 deg = 0.9945)
    keep, dup_of, _ = semdedup.semdedup(emb, [1, 1, 1, 1], threshold=0.99)
    assert keep.tolist() == [True, False, False, True]
    assert dup_of.tolist() == [-1, 0, 0, -1]
    assert semdedup.groups(dup_of) == [[0, 1, 2]]


def test_a_chain_compares_with_kept_documents_only():
    # a ~ b (cos 8 deg = 0.990) and b ~ c, but a and c are 16 deg apart (0.961): b goes, c stays
    keep, dup_of, _ = semdedup.semdedup(unit(0, 8, 16), [0, 0, 0], threshold=0.985)
    assert keep.tolist() == [True, False, True] and dup_of.tolist() == [-1, 0, -1]


def test_documents_of_different_clusters_are_never_compared():
    keep, _, _ = semdedup.semdedup(unit(0, 0, 0), [0, 1, 2], threshold=0.5)
    assert keep.all()


def test_the_threshold_is_exclusive_and_one_removes_nothing_but_exact_copies_beyond_it():
    emb = np.array([[1.0, 0.0], [0.6, 0.8], [2.0, 0.0]])  # the third is the first, scaled: cosine 1
    keep, _, _ = semdedup.semdedup(emb, [0, 0, 0], threshold=0.6)  # cos(doc0, doc1) = 0.6: not above
    assert keep.tolist() == [True, True, False]
    keep, _, _ = semdedup.semdedup(emb, [0, 0, 0], threshold=1.0)
    assert keep.all()


def test_blocks_give_the_same_answer_as_one_block():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(40, 16))
    emb = np.concatenate([base, base[:15] + rng.normal(scale=0.01, size=(15, 16))])
    labels = rng.integers(0, 3, size=len(emb))
    labels[40:] = labels[:15]
    one = semdedup.semdedup(emb, labels, 0.98)
    many = semdedup.semdedup(emb, labels, 0.98, block=7)
    assert all((a == b).all() for a, b in zip(one, many))
    assert (~one[0]).sum() == 15 and set(np.flatnonzero(~one[0])) == set(range(40, 55))


def test_a_zero_vector_is_never_a_duplicate():
    keep, _, _ = semdedup.semdedup(np.zeros((3, 4)), [0, 0, 0], threshold=0.1)
    assert keep.all()


# -- the node side before any library -------------------------------------------------------------

def fake_task(tmp_path: Path, docs: int, **cluster) -> SimpleNamespace:
    data = tmp_path / "data"
    data.mkdir()
    with gzip.open(data / "00000.jsonl.gz", "wt") as f:
        for i in range(docs):
            f.write(json.dumps({"id": f"d{i}", "text": f"document {i}"}) + "\n")
    c = {"input": str(data), "text_key": "text", "id_key": "id", "embedding": "tfidf", "dims": 8,
         "max_features": 100, "k": 8, "sample": None, "seed": 0, "label_terms": 3, "examples": 1,
         "semdedup": {"enabled": True, "threshold": 0.9}, **cluster}
    c.setdefault("step", {"part": "fit", "stage": "topics"})
    spec = {"run_dir": str(tmp_path / "run"), "stage": "topics_fit", "parents": [], "tasks_per_point": 1,
            "stage_hashes": {"topics_fit": "h"}}
    return SimpleNamespace(stage="topics_fit", point=0, index=0, spec=spec, payload={"cluster": c},
                           export_environment=lambda: None)


def test_k_larger_than_the_documents_fails_at_the_fit_tasks_start_naming_the_written_stage_and_key(tmp_path):
    with pytest.raises(runner.ClusterConfigError) as e:
        runner.run(fake_task(tmp_path, docs=5, k=8))
    assert str(e.value).startswith("stage 'topics': pipeline.stages.topics.cluster.k: k=8 clusters but")
    assert "holds 5 document(s): use k <= 5" in str(e.value)


def test_an_input_without_the_text_field_names_the_input_key(tmp_path):
    with pytest.raises(runner.ClusterConfigError) as e:
        runner.run(fake_task(tmp_path, docs=5, k=2, text_key="content"))
    assert "pipeline.stages.topics.cluster.input" in str(e.value) and "'content'" in str(e.value)


def test_the_dedup_part_names_the_shards_whose_assign_task_did_not_finish(tmp_path):
    (tmp_path / "00001.npz").write_bytes(b"")
    with pytest.raises(FileNotFoundError) as e:
        runner.gather(tmp_path, 3, "topics")
    assert "shard(s) [0, 2] of 3 missing" in str(e.value) and "topics" in str(e.value)


# -- the map ---------------------------------------------------------------------------------------

def test_the_topic_map_is_a_valid_png(tmp_path):
    png.scatter(tmp_path / "m.png", [(0.0, 0.0), (1.0, 2.0), (100.0, -5.0)], [0, 1, 11], size=32)
    data = (tmp_path / "m.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (32, 32)
    length = struct.unpack(">I", data[33:37])[0]
    raw = zlib.decompress(data[41:41 + length])
    assert len(raw) == 32 * (1 + 32 * 3) and raw.count(b"\xff") < len(raw)  # something drawn on white
