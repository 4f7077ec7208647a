"""The evaluation core on real libraries, CPU, offline: held-out tasks made from the demo corpus's
reserved paragraphs (jobs/adapters/eval_tasks.py), a tiny Llama trained on the corpus's clean documents
(jobs/adapters/trainer.py), and jobs/lighteval_run.evaluate scoring two checkpoints (and the first again) in
one process with lighteval 0.13, plus the refusals of folders that are not model checkpoints.

The heavy work runs in the cpu stage environment (eval_helper.py, one subprocess, ~35 s on 2 cores);
the checks read what it wrote."""
from __future__ import annotations

import gzip
import json
import math
import os
import subprocess
from pathlib import Path

import pytest
from hf_train_helper import tiny_train

from jobs.adapters import eval_tasks

HELPER = Path(__file__).with_name("eval_helper.py")
SAMPLES = 200

# 60 steps of 4 x 64 = 256 tokens, a checkpoint every 20 steps; a context of 256 holds every held-out paragraph
TRAIN = tiny_train(steps=60, every=20, seq_len=64, micro_batch=4, max_positions=256, log_every=10)


@pytest.fixture(scope="module")
def run(cpu_python, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("lighteval")
    work = root / "work"
    work.mkdir()
    job = {"work": str(work), "docs": 1200, "train_docs": 300, "vocab": 512, "samples": SAMPLES, "train": TRAIN}
    (root / "job.json").write_text(json.dumps(job))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "SLURM_CPUS_PER_TASK": "2", "TOKENIZERS_PARALLELISM": "false", "LIGHTEVAL_DISABLE_TQDM": "1"}
    p = subprocess.run([str(cpu_python), str(HELPER), str(root / "job.json"), str(root / "result.json")],
                       capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0, f"eval_helper exited {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-6000:]}"
    res = json.loads((root / "result.json").read_text())
    res["work"] = work
    return res


def evals(run) -> dict:
    return {e["name"]: e for e in run["evals"]}


def test_two_checkpoints_score_both_tasks_in_one_process(run):
    assert run["checkpoints"] == ["checkpoint-20", "checkpoint-40", "checkpoint-60"], run["train"]
    e = evals(run)
    assert [e[n]["checkpoint"] for n in ("first", "last")] == ["checkpoint-20", "checkpoint-60"]
    for name in ("first", "last"):
        scores = e[name]["scores"]
        assert set(scores) == {"clean_next", "clean_bpb"}, scores
        acc, bpb = scores["clean_next"], scores["clean_bpb"]
        assert set(acc) == {"acc_norm", "acc_norm_stderr"} and set(bpb) == {"bits_per_byte", "bits_per_byte_stderr"}
        assert 0.0 <= acc["acc_norm"] <= 1.0
        # the standard error of a mean of 200 zeros and ones
        p = acc["acc_norm"]
        assert acc["acc_norm_stderr"] == pytest.approx(math.sqrt(p * (1 - p) / (SAMPLES - 1)), rel=1e-6)
        # bits per byte: positive, below a uniform guess over 512 tokens (9 bits per token, >1 byte per token)
        assert 0 < bpb["bits_per_byte"] < 9
        assert 0.002 < bpb["bits_per_byte_stderr"] < 0.5  # a bootstrap over 200 texts, not divided by sqrt(1000)
        assert len(e[name]["results_files"]) == 1  # lighteval's own results file, in the call's out_dir
        assert e[name]["log"] and e[name]["log"][0].startswith(f"lighteval: {e[name]['checkpoint']} on 2 task(s)")
    # imports once: later calls in the same process are much faster than the first
    assert e["last"]["seconds"] < e["first"]["seconds"]


def test_longer_training_lowers_bits_per_byte(run):
    e = evals(run)
    first, last = e["first"]["scores"]["clean_bpb"], e["last"]["scores"]["clean_bpb"]
    assert last["bits_per_byte"] < first["bits_per_byte"] - 0.05, (first, last)


def test_a_repeated_call_in_the_same_process_gives_the_same_scores(run):
    e = evals(run)
    assert e["first_again"]["checkpoint"] == e["first"]["checkpoint"]
    assert e["first_again"]["scores"] == e["first"]["scores"]
    # and leaves the process as it found it: importing lighteval turns autograd off process-wide
    assert run["grad_enabled_after"] is True


def test_bits_per_byte_is_what_the_model_assigns_to_the_text(run):
    """lighteval's rolling log-likelihood (transformers backend) is broken in 0.13; ours matches a
    direct computation: -sum log2 p(token | EOS, tokens before) / UTF-8 bytes."""
    last = evals(run)["last"]["scores"]["clean_bpb"]["bits_per_byte"]
    assert last == pytest.approx(run["direct_bpb"], rel=1e-4)
    # a text longer than the model's context is scored in windows, every token counted
    assert run["long_tokens"] > TRAIN["model"]["max_position_embeddings"]
    assert run["long"]["bits_per_byte"] == pytest.approx(last, rel=0.2)


@pytest.mark.parametrize("case", ["empty", "garbage", "unknown", "broken", "missing"])
def test_a_folder_that_is_no_model_checkpoint_is_refused_by_name(run, case):
    r = run["refusals"][case]
    assert r["error"] == "ValueError", r
    folder = str(run["work"] / "bad" / ("nowhere" if case == "missing" else case))
    assert folder in r["message"]
    expect = {"empty": "no config.json", "garbage": "config.json is not valid JSON",
              "unknown": "not a loadable model checkpoint", "broken": "not a loadable model checkpoint",
              "missing": "does not exist"}[case]
    assert expect in r["message"], r["message"]


def test_a_bad_task_row_is_named_with_its_file_and_line(run):
    r = run["refusals"]["bad_row"]
    assert r["error"] == "ValueError" and "task 'mine'" in r["message"] and "rows.jsonl:2" in r["message"], r


def test_held_out_paragraphs_never_occur_in_the_corpus(run):
    work = run["work"]
    held = json.loads((work / "held_out.json").read_text())
    assert len(held) >= SAMPLES and run["corpus"]["documents"] == 1200
    text = "\n\0\n".join(json.loads(line)["text"] for f in sorted((work / "corpus").glob("*.jsonl.gz"))
                         for line in gzip.open(f, "rt", encoding="utf-8"))
    assert [p for p in held if p in text] == []
    # and every evaluation row comes from them: clean_bpb texts are held-out paragraphs, and each
    # clean_next query + its gold choice is one again
    specs = run["specs"]
    rows = {k: [json.loads(x) for x in Path(s["path"]).read_text().splitlines()] for k, s in specs.items()}
    assert len(rows["clean_bpb"]) == len(rows["clean_next"]) == SAMPLES
    assert {r["text"] for r in rows["clean_bpb"]} <= set(held)
    assert all(r["query"] + r["choices"][r["gold"]] in set(held) for r in rows["clean_next"])


def test_write_tasks_specs_and_files(run):
    specs = run["specs"]
    assert specs["clean_next"] == {
        "name": "clean_next", "kind": "multiple_choice", "path": specs["clean_next"]["path"], "metric": "acc_norm",
        "random_baseline": 0.25, "higher_is_better": True, "samples": SAMPLES}
    assert specs["clean_bpb"] == {
        "name": "clean_bpb", "kind": "perplexity", "path": specs["clean_bpb"]["path"], "metric": "bits_per_byte",
        "random_baseline": None, "higher_is_better": False, "samples": SAMPLES}
    mc = [json.loads(x) for x in Path(specs["clean_next"]["path"]).read_text().splitlines()]
    assert all(len(r["choices"]) == 4 and len(set(r["choices"])) == 4 for r in mc)
    golds = [r["gold"] for r in mc]
    assert set(golds) == {0, 1, 2, 3} and max(golds.count(g) for g in range(4)) < 0.4 * SAMPLES
    assert all(eval_tasks.check_spec(s) == [] for s in specs.values())
    assert run["write_tasks_same"] and run["write_tasks_seed_differs"]


# -- specs and rows, standard library only (no subprocess) ---------------------------------------------
def test_check_spec_and_load_rows_name_the_problem(tmp_path):
    good = tmp_path / "mc.jsonl"
    good.write_text('{"query": "Q", "choices": [" a", " b"], "gold": 1, "extra": 1}\n\n')
    s = eval_tasks.spec("mine", "multiple_choice", good)
    assert s == {"name": "mine", "kind": "multiple_choice", "path": str(good), "metric": "acc_norm",
                 "random_baseline": None, "higher_is_better": True}
    assert eval_tasks.load_rows(s) == [{"query": "Q", "choices": [" a", " b"], "gold": 1, "extra": 1}]
    assert eval_tasks.spec("t", "perplexity", good)["metric"] == "bits_per_byte"

    assert "kind must be one of" in eval_tasks.check_spec({**s, "kind": "essay"})[0]
    assert "metric for kind multiple_choice" in eval_tasks.check_spec({**s, "metric": "bits_per_byte"})[0]
    assert "name must be" in eval_tasks.check_spec({**s, "name": "a|b"})[0]
    assert "is not a file" in eval_tasks.check_spec({**s, "path": str(tmp_path / "none.jsonl")})[0]
    with pytest.raises(ValueError, match="unknown kind"):
        eval_tasks.spec("x", "essay", good)
    for line, problem in (('{"query": "Q", "choices": [" a", " b"], "gold": 2}', '"gold" must be an index'),
                          ('{"query": "Q", "choices": " a", "gold": 0}', '"choices" must be a list'),
                          ('{"choices": [" a", " b"], "gold": 0}', '"query" must be a string'),
                          ("[1, 2]", "not a JSON object"), ("{oops", "is not JSON")):
        bad = tmp_path / "bad.jsonl"
        bad.write_text('{"query": "Q", "choices": [" a", " b"], "gold": 0}\n' + line + "\n")
        with pytest.raises(ValueError, match=r"bad\.jsonl:2") as e:
            eval_tasks.load_rows({**s, "path": str(bad)})
        assert problem in str(e.value)
    text = tmp_path / "text.jsonl"
    text.write_text('{"text": "fine"}\n{"text": ""}\n')
    with pytest.raises(ValueError, match=r'text\.jsonl:2: "text" must be a non-empty string'):
        eval_tasks.load_rows({"name": "t", "kind": "perplexity", "path": str(text)})
