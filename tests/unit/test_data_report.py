"""What the datatrove stages did, read from files: per-rank stats summed, removed/kept samples, and
the demo corpus those stages are tried on."""
import gzip
import json
import shutil
import sysconfig
import types
from pathlib import Path

import pytest

from jobs.demo import corpus as demo_corpus
from jobs import layout
from launcher.reports.data_report import block_rows, sample, summarize
from launcher.errors import LauncherError
from launcher.plan.model import Plan, StagePlan

HASH = "abc123def456"


def rank_stats(docs, kept):
    """One rank's stats file as datatrove writes it: a list of blocks, each {name, stats}."""
    return [{"name": "📖 - READER: 🐿 Jsonl", "stats": {"documents": {"total": docs, "mean": 1.0}}},
            {"name": "🔻 - FILTER: 🥇 Gopher Quality",
             "stats": {"total": docs, "forwarded": kept, "dropped": docs - kept,
                       "dropped_gopher_short_doc": docs - kept}},
            {"name": "💽 - WRITER: 🐿 Jsonl", "stats": {"total": kept}}]


def stage_plan(name, kind, points=1, tasks=4):
    return StagePlan(name=name, kind=kind, tasks_per_point=tasks, points=points, throttle=None, time_min=60,
                     resources={"nodes": 1, "gpus_per_node": 0}, requeue={}, singleton=False, deps=[], hash=HASH,
                     payloads=[{}] * points)


def plan_with(*stages):
    return Plan(pipeline="data", cluster={"name": "local"}, points=[[]], stages={s.name: s for s in stages})


def write_docs(folder: Path, ids, name="00000.jsonl.gz"):
    folder.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if name.endswith(".gz") else open
    with opener(folder / name, "wt", encoding="utf-8") as f:
        for i in ids:
            f.write(json.dumps({"id": i, "text": f"text of {i}", "metadata": {}}) + "\n")


# -- block_rows / summarize ------------------------------------------------------------------------

def test_block_rows_sums_ranks(tmp_path):
    (tmp_path / "00000.json").write_text(json.dumps(rank_stats(10, 7)))
    (tmp_path / "00001.json").write_text(json.dumps(rank_stats(10, 7)))
    (tmp_path / "notes.txt").write_text("not stats")
    ranks, rows = block_rows(tmp_path)
    assert ranks == 2
    assert [(r["index"], r["in"], r["out"], r["removed"], r["reasons"]) for r in rows] == [
        (0, None, 20, None, {}),
        (1, 20, 14, 6, {"gopher_short_doc": 6}),
        (2, 14, 14, None, {}),
    ]
    assert rows[1]["block"] == "🔻 - FILTER: 🥇 Gopher Quality"


def test_block_rows_uneven_ranks_and_missing_folder(tmp_path):
    (tmp_path / "00000.json").write_text(json.dumps(rank_stats(10, 7)))
    (tmp_path / "00001.json").write_text(json.dumps(rank_stats(5, 1)))
    _, rows = block_rows(tmp_path)
    assert (rows[0]["out"], rows[1]["in"], rows[1]["out"], rows[1]["removed"], rows[2]["out"]) == (15, 15, 8, 7, 8)
    assert rows[1]["reasons"] == {"gopher_short_doc": 7}
    assert block_rows(tmp_path / "absent") == (0, [])


def test_summarize_reads_each_preprocess_stage_of_each_point(tmp_path):
    plan = plan_with(stage_plan("clean", "preprocess", points=2), stage_plan("train", "command"))
    stats = layout.datatrove_dir(tmp_path, "clean", HASH, 1, "logs") / "stats"
    stats.mkdir(parents=True)
    (stats / "00003.json").write_text(json.dumps(rank_stats(4, 3)))
    s = summarize(tmp_path, plan)
    assert list(s) == ["clean"]
    assert (s["clean"]["0"]["ranks"], s["clean"]["0"]["blocks"]) == (0, [])
    assert s["clean"]["1"]["ranks"] == 1 and s["clean"]["1"]["tasks"] == 4
    assert s["clean"]["1"]["blocks"][1]["removed"] == 1
    assert s["clean"]["1"]["output"] == str(layout.datatrove_dir(tmp_path, "clean", HASH, 1, "output"))


# -- sample ----------------------------------------------------------------------------------------

@pytest.fixture
def run(tmp_path):
    """A run whose stage `clean` kept the removed documents of blocks 1, 2 and 3 and wrote its output."""
    removed = layout.datatrove_dir(tmp_path, "clean", HASH, 0, "removed")
    write_docs(removed / "1-GopherQualityFilter", ["g0", "g1", "g2"])
    write_docs(removed / "2-C4QualityFilter", ["c0"])
    write_docs(removed / "3-FineWebQualityFilter", ["f0", "f1"])
    write_docs(removed / "3-FineWebQualityFilter" / "sub", ["f2"], name="00001.jsonl")  # plain jsonl, nested
    out = layout.datatrove_dir(tmp_path, "clean", HASH, 0, "output")
    write_docs(out, ["o0", "o1"])
    write_docs(out, ["o2"], name="00001.jsonl.gz")
    # Another config's folders and another point: never read.
    write_docs(layout.datatrove_dir(tmp_path, "clean", "0ther0hash000", 0, "removed") / "1-GopherQualityFilter",
               ["stale"])
    write_docs(layout.datatrove_dir(tmp_path, "clean", HASH, 1, "output"), ["point1"])
    plan = plan_with(stage_plan("clean", "preprocess"), stage_plan("train", "command"))
    return tmp_path, plan


def ids(docs):
    return sorted(d["id"] for d in docs)


def test_removed_sample_reads_only_that_blocks_folder(run):
    run_dir, plan = run
    name, total, docs = sample(run_dir, plan, "clean", "GopherQualityFilter", n=100)
    assert (name, total, ids(docs)) == ("1-GopherQualityFilter", 3, ["g0", "g1", "g2"])
    name, total, docs = sample(run_dir, plan, "clean", "FineWebQualityFilter", n=100)
    assert (name, total, ids(docs)) == ("3-FineWebQualityFilter", 3, ["f0", "f1", "f2"])


def test_kept_sample_is_output_plus_what_later_blocks_removed(run):
    run_dir, plan = run
    name, total, docs = sample(run_dir, plan, "clean", "GopherQualityFilter", removed=False, n=100)
    assert (name, total) == ("1-GopherQualityFilter", 7)
    assert ids(docs) == ["c0", "f0", "f1", "f2", "o0", "o1", "o2"]  # never g*: those it removed
    _, total, docs = sample(run_dir, plan, "clean", "2", removed=False, n=100)
    assert ids(docs) == ["f0", "f1", "f2", "o0", "o1", "o2"]  # not c0 (its own) nor g* (removed before it)
    _, _, docs = sample(run_dir, plan, "clean", "3", removed=False, n=100)
    assert ids(docs) == ["o0", "o1", "o2"]


def test_sample_size_and_seed(run):
    run_dir, plan = run
    _, total, docs = sample(run_dir, plan, "clean", "gopher", removed=False, n=2, seed=5)
    assert total == 7 and len(docs) == 2 and len(set(ids(docs))) == 2
    assert docs == sample(run_dir, plan, "clean", "gopher", removed=False, n=2, seed=5)[2]
    assert len(sample(run_dir, plan, "clean", "gopher", n=0)[2]) == 0


def test_block_names_by_class_substring_or_index(run):
    run_dir, plan = run
    assert sample(run_dir, plan, "clean", "gopherqualityfilter")[0] == "1-GopherQualityFilter"
    assert sample(run_dir, plan, "clean", "GOPHER")[0] == "1-GopherQualityFilter"
    assert sample(run_dir, plan, "clean", "fineweb")[0] == "3-FineWebQualityFilter"
    assert sample(run_dir, plan, "clean", "c4")[0] == "2-C4QualityFilter"
    assert sample(run_dir, plan, "clean", "3")[0] == "3-FineWebQualityFilter"


def test_ambiguous_block_name(run):
    run_dir, plan = run
    with pytest.raises(LauncherError) as e:
        sample(run_dir, plan, "clean", "QualityFilter")
    assert "[1, 2, 3]" in str(e.value) and "index" in str(e.value)


def test_unknown_block_lists_the_blocks_with_removed_documents(run):
    run_dir, plan = run
    with pytest.raises(LauncherError) as e:
        sample(run_dir, plan, "clean", "URLFilter")
    msg = str(e.value)
    assert "'URLFilter'" in msg
    for folder in ("1-GopherQualityFilter", "2-C4QualityFilter", "3-FineWebQualityFilter"):
        assert folder in msg
    with pytest.raises(LauncherError, match="none"):
        sample(run_dir, plan, "clean", "gopher", point=1)  # point 1 kept nothing removed


def test_sample_of_a_stage_that_is_not_datatrove(run):
    run_dir, plan = run
    for stage in ("train", "nosuch"):
        with pytest.raises(LauncherError) as e:
            sample(run_dir, plan, stage, "gopher")
        assert f"'{stage}'" in str(e.value) and "those are: clean" in str(e.value)


# -- demo corpus -----------------------------------------------------------------------------------

STDLIB_FILES = ["threading.py", "difflib.py", "pathlib.py", "subprocess.py"]
TEST_ONLY = ("This paragraph lives in a test module of the library and therefore must never become part "
             "of any corpus that the demo writes.")


@pytest.fixture(scope="module")
def small_stdlib(tmp_path_factory):
    """A few real stdlib modules (and a test package that must be skipped): scanning the whole
    standard library takes ~10 s, these take well under one."""
    root = tmp_path_factory.mktemp("stdlib")
    real = Path(sysconfig.get_paths()["stdlib"])
    for name in STDLIB_FILES:
        shutil.copy(real / name, root / name)
    (root / "test").mkdir()
    (root / "test" / "test_x.py").write_text(f'"""{TEST_ONLY}"""\n')
    return root


@pytest.fixture
def corpus(small_stdlib, monkeypatch, tmp_path):
    monkeypatch.setattr(demo_corpus, "sysconfig", types.SimpleNamespace(get_paths=lambda: {"stdlib": str(small_stdlib)}))

    def make(name, **kw):
        return tmp_path / name, demo_corpus.make_corpus(tmp_path / name, **kw)
    return make


def read_corpus(folder):
    return [json.loads(line) for f in sorted(folder.glob("*.jsonl.gz"))
            for line in gzip.open(f, "rt", encoding="utf-8")]


def test_demo_corpus_is_byte_identical_for_a_seed(corpus):
    a, counts_a = corpus("a", docs=200, shards=3, seed=7)
    b, counts_b = corpus("b", docs=200, shards=3, seed=7)
    shards = sorted(p.name for p in a.glob("*.jsonl.gz"))
    assert shards == ["00000.jsonl.gz", "00001.jsonl.gz", "00002.jsonl.gz"]
    assert sorted(p.name for p in b.glob("*.jsonl.gz")) == shards
    for s in shards:
        assert (a / s).read_bytes() == (b / s).read_bytes()
    assert counts_a == counts_b and counts_a["documents"] == 200
    assert json.loads((a / "corpus.json").read_text()) == counts_a
    c, _ = corpus("c", docs=200, shards=3, seed=8)
    assert (c / shards[0]).read_bytes() != (a / shards[0]).read_bytes()


def test_demo_corpus_kinds_follow_shares_and_near_dups_point_at_clean_docs(corpus):
    folder, counts = corpus("a", docs=200, shards=4, seed=0)
    docs = read_corpus(folder)
    assert len(docs) == 200 and len({d["id"] for d in docs}) == 200
    kinds = {}
    for d in docs:
        kinds[d["metadata"]["kind"]] = kinds.get(d["metadata"]["kind"], 0) + 1
    expected = {k: int(200 * share) for k, share in demo_corpus.SHARES.items()}
    expected["clean"] = 200 - sum(expected.values())
    assert kinds == expected == {"foreign": 30, "spam": 30, "near_dup": 20, "clean": 120} == counts["kinds"]
    by_id = {d["id"]: d for d in docs}
    near = [d for d in docs if d["metadata"]["kind"] == "near_dup"]
    for d in near:
        orig = by_id[d["metadata"]["dup_of"]]
        assert orig["metadata"]["kind"] == "clean"
        a, b = d["text"].split(" "), orig["text"].split(" ")
        assert len(a) == len(b) and sum(x != y for x, y in zip(a, b)) <= max(1, len(b) // 150)
    assert all(TEST_ONLY not in d["text"] for d in docs)
    assert {d["metadata"]["lang"] for d in docs if d["metadata"]["kind"] == "foreign"} <= \
        set(demo_corpus.foreign_paragraphs())
