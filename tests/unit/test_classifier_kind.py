"""kind=classifier without fastText: planning pipeline=quality, the checks made before submission (labels,
training keys, unknown keys), the labelling, the split and the metrics of the node side
(jobs/kinds/classifier.py), and the check the task makes at its start (a label the data lacks).
End to end with fastText and datatrove: tests/integration/test_quality.py."""
from __future__ import annotations

import gzip
import json

import pytest

from jobs.kinds import classifier as runner
from launcher.config.compose import compose
from launcher.errors import LauncherError
from launcher.kinds import classifier as kind
from launcher.plan.model import build_plan

STAGE = "pipeline.stages.classifier"


def plan_of(*overrides):
    return build_plan([compose(["pipeline=quality", "cluster=local", *overrides])], [[]])


def errors_of(*overrides) -> str:
    with pytest.raises(LauncherError) as e:  # ConfigError, or ConfigErrors holding several
        plan_of(*overrides)
    return str(e.value)


# -- planning -------------------------------------------------------------------------------------------------
def test_quality_plans_prefilter_classifier_filter_with_the_classifier_in_the_cpu_environment():
    plan = plan_of()
    assert list(plan.stages) == ["prefilter", "classifier", "filter"]
    c = plan.stages["classifier"]
    assert c.tasks_per_point == 1 and c.environment["name"] == "cpu"
    cfg = c.payloads[0]["classifier"]
    assert cfg["labels"] == {"clean": ["clean", "near_dup"], "spam": ["spam"]} and cfg["word_ngrams"] == 2
    blocks = plan.stages["filter"].payloads[0]["blocks"]
    ft = next(b for b in blocks if b["_target_"].endswith("FastTextClassifierFilter"))
    assert ft["model_url"] == "{input:classifier}/model.bin" and ft["keep_labels"] == [["clean", 0.5]]


# -- checks before submission ---------------------------------------------------------------------------------
def test_one_label_is_refused_naming_stage_and_key():
    msg = errors_of(f"~{STAGE}.classifier.labels.spam")  # a dict override merges: delete the key
    assert "stage 'classifier'" in msg and f"{STAGE}.classifier.labels" in msg and "at least two labels" in msg


def test_no_labels_is_refused():
    assert "at least two labels" in errors_of(f"~{STAGE}.classifier.labels.spam", f"~{STAGE}.classifier.labels.clean")


@pytest.mark.parametrize("override, key, words", [
    (f"{STAGE}.classifier.labels={{clean: [clean], spam: [clean]}}", "classifier.labels.spam", "also a value of"),
    (f"{STAGE}.classifier.labels={{clean: [clean], spam: []}}", "classifier.labels.spam", "non-empty list"),
    (f"{STAGE}.classifier.held_out=1.0", "classifier.held_out", "must be in (0, 1)"),
    (f"{STAGE}.classifier.word_ngrams=0", "classifier.word_ngrams", "must be >= 1"),
    (f"{STAGE}.classifier.lr=0", "classifier.lr", "must be > 0"),
    (f"+{STAGE}.classifier.extra.wordNgrams=3", "classifier.extra", "wordNgrams"),
    (f"{STAGE}.tasks=2", "tasks", "must be 1"),
    (f"{STAGE}.classifier.input='{{input:filter}}'", "classifier.input", "not a stage this one waits for"),
])
def test_bad_settings_are_refused_naming_the_key(override, key, words):
    msg = errors_of(override)
    assert f"{STAGE}.{key}" in msg and words in msg, msg


def test_an_unknown_key_of_the_section_is_refused_by_name():
    msg = errors_of(f"+{STAGE}.classifier.wordgrams=2")
    assert "classifier.wordgrams" in msg


def test_a_label_name_fasttext_cannot_write_is_refused():
    errors = []
    kind.check_labels(kind.Problems("c", errors), {"good one": ["a"], "b": ["b"]})
    assert [e.key for e in errors] == ["pipeline.stages.c.classifier.labels.good one"]


def test_a_plain_input_that_does_not_exist_is_found_by_preflight(tmp_path):
    plan = plan_of(f"{STAGE}.classifier.input={tmp_path / 'nowhere'}")
    errors = kind.KIND.preflight(plan, plan.stages["classifier"])
    assert [e.key for e in errors] == [f"{STAGE}.classifier.input"]


# -- node side: labels, split, metrics ------------------------------------------------------------------------
C = {"labels": {"good": ["clean", "near_dup"], "bad": ["spam"]}, "label_key": "kind", "text_key": "text",
     "input": "in", "held_out": 0.2, "seed": 0}


def records(kinds):
    return [(i, f"d{i}", {"kind": k, "text": f"text {i}"}) for i, k in enumerate(kinds)]


def test_records_get_the_label_whose_values_hold_them_and_the_others_are_counted():
    docs, unused = runner.labelled(records(["clean", "spam", "foreign", "near_dup"]) + [(4, "d4", {"kind": "clean"})], C)
    assert [(d[0], d[1]) for d in docs] == [("d0", "good"), ("d1", "bad"), ("d3", "good")] and unused == 2


def test_text_and_label_may_be_dotted_paths_into_a_generate_output_line():
    line = {"id": "q1", "completion": "4", "input": {"text": "a lesson on fractions"}}
    docs, unused = runner.labelled([(0, "q1", line)], dict(C, text_key="input.text", label_key="completion",
                                                           labels={"edu": ["4", "5"], "other": ["0", "1"]}))
    assert docs == [("q1", "edu", "a lesson on fractions")] and unused == 0


def test_the_split_is_stratified_deterministic_and_changes_with_the_seed():
    docs, _ = runner.labelled(records(["clean"] * 50 + ["spam"] * 10), C)
    train, test = runner.split(docs, 0.2, seed=0)
    assert sorted(d[1] for d in test).count("good") == 10 and [d[1] for d in test].count("bad") == 2
    assert {d[0] for d in train} | {d[0] for d in test} == {d[0] for d in docs} and not set(train) & set(test)
    assert runner.split(list(reversed(docs)), 0.2, seed=0) == (train, test)  # input order does not matter
    assert runner.split(docs, 0.2, seed=1)[1] != test


def test_every_label_keeps_one_document_on_each_side():
    train, test = runner.split([("a", "x", "t"), ("b", "x", "t"), ("c", "y", "t"), ("d", "y", "t")], 0.9, seed=0)
    assert sorted(d[1] for d in train) == ["x", "y"] and sorted(d[1] for d in test) == ["x", "y"]


def test_metrics_per_label_against_a_hand_count():
    truth = ["a", "a", "a", "a", "b", "b"]
    predicted = ["a", "a", "a", "b", "b", "a"]
    m = runner.metrics(truth, predicted, ["a", "b"])
    a, b = m["labels"]["a"], m["labels"]["b"]
    assert (a["precision"], a["recall"], a["support"]) == (3 / 4, 3 / 4, 4)
    assert (b["precision"], b["recall"], b["support"]) == (1 / 2, 1 / 2, 2)
    assert a["f1"] == pytest.approx(0.75) and m["accuracy"] == pytest.approx(4 / 6)
    assert m["macro"]["recall"] == pytest.approx((0.75 + 0.5) / 2)


def test_metrics_of_a_label_never_predicted_are_zero_not_nan():
    m = runner.metrics(["a", "b"], ["a", "a"], ["a", "b"])
    assert m["labels"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert m["labels"]["a"]["precision"] == 0.5 and m["labels"]["a"]["recall"] == 1.0


def test_a_label_the_data_lacks_fails_the_task_start_naming_stage_and_key(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    with gzip.open(folder / "00000.jsonl.gz", "wt") as f:
        for i in range(5):
            f.write(json.dumps({"id": f"c{i}", "text": "some clean text", "metadata": {"kind": "clean"}}) + "\n")
    from jobs.runtime import prompt_records

    docs, _ = runner.labelled(prompt_records.file_records(str(folder)), C)
    with pytest.raises(runner.ClassifierConfigError) as e:
        runner.check_counts("classifier", C, docs)
    assert str(e.value).startswith("stage 'classifier': pipeline.stages.classifier.classifier.labels:")
    assert "'bad' has 0" in str(e.value)


# -- the ablation -------------------------------------------------------------------------------------------
def test_the_quality_ablation_trains_one_classifier_for_both_variants_and_only_quality_filters_with_it():
    from launcher.plan import key_facts, keys
    from launcher.config.compose import sweep_points

    points = sweep_points(["pipeline=quality_ablation", "cluster=local", "data=quality,raw", "seed=1,2"], True)
    plan = build_plan([compose(p) for p in points], points)
    keys.assign(plan, key_facts.gather(plan, "/tmp/launcher-keys-root"))
    assert plan.stages["classifier"].shared == [0, 0, 0, 0] and plan.stages["labelled"].shared == [0, 0, 0, 0]
    clean = plan.stages["clean"]
    filters = [[b["_target_"].rsplit(".", 1)[-1] for b in p["blocks"]] for p in clean.payloads]
    assert filters[0] == ["JsonlReader", "URLFilter", "language_filter", "FastTextClassifierFilter", "JsonlWriter"]
    assert filters[2] == ["JsonlReader", "JsonlWriter"]  # raw: no filter, the classifier is only an order
    assert clean.shared == [0, 0, 2, 2]


def test_the_quality_recipe_in_a_pipeline_without_a_classifier_stage_is_refused_by_name():
    msg = build_plan_error("pipeline=ablation", "data=quality")
    assert "pipeline.stages.clean.blocks.3.model_url" in msg and "'classifier' is not a stage this one waits for" in msg


def build_plan_error(*overrides) -> str:
    with pytest.raises(LauncherError) as e:
        build_plan([compose(["cluster=local", *overrides])], [[]])
    return str(e.value)
