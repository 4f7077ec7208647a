"""train.ema (pretrain, backend hf) and the evaluation of the moving average beside the raw weights: the
plan-time checks, which weights of a checkpoint an evaluation still has to score, the result files and the
rows the report reads (an EMA curve apart from the raw one)."""
import json

from launcher import kinds
from launcher.config.compose import compose
from launcher.plan.model import build_plan

from jobs.adapters import eval_results
from jobs.kinds.evaluate import models
from plan_errors import S, TRAIN, errors_of

K = f"{S}.train.train.ema.decay"


def test_decay_out_of_range_or_not_a_number_is_refused_naming_the_key():
    for bad in ("1.0", "0", "-0.5"):  # a string or a bool: the schema refuses it first
        errs = errors_of(*TRAIN, f"{S}.train.train.ema.decay={bad}")
        assert ("train", K) in errs and "must be a number in (0, 1) or null" in errs[("train", K)], (bad, errs)


def test_nanotron_has_no_moving_average_and_says_so():
    errs = errors_of(*TRAIN, f"{S}.train.train.backend=nanotron", f"{S}.train.train.ema.decay=0.99")
    assert "nanotron keeps no moving average" in errs[("train", K)], errs


def test_hf_with_ema_plans_and_the_payload_carries_it(tmp_path):
    plan = build_plan([compose([*TRAIN, f"{S}.train.train.ema.decay=0.9"])], [[]])
    assert plan.stages["train"].payloads[0]["train"]["ema"] == {"decay": 0.9}
    text = "\n".join(kinds.get("pretrain").describe(plan, plan.stages["train"], tmp_path))
    assert "EMA of the weights (decay 0.9) beside each checkpoint" in text  # what `launcher plan` prints


def test_a_checkpoint_with_ema_is_scored_twice_the_average_first(tmp_path):
    ckpt, out = tmp_path / "checkpoint-4", tmp_path / "evals"
    (ckpt / "ema").mkdir(parents=True)
    out.mkdir()
    assert models(ckpt, out, 4) == [("raw", ckpt)]  # no ema.json yet: not an average (yet)
    (ckpt / "ema" / "ema.json").write_text('{"decay": 0.9, "steps": 4}')
    assert models(ckpt, out, 4) == [("ema", ckpt / "ema"), ("raw", ckpt)]
    (out / "step-4-ema.json").write_text("{}")  # scored before a requeue: not again
    assert models(ckpt, out, 4) == [("raw", ckpt)]


def result(step, weights, value, variant="all"):
    return {"campaign": "c", "run_id": "r", "point": 0, "variant": variant, "seed": 1, "step": step,
            "tokens": step * 10, "metrics": {"t": {"acc": value, "acc_stderr": 0.1}}, "weights": weights,
            "tasks": [{"name": "t", "random_baseline": 0.25}]}


def test_ema_rows_carry_their_own_variant_and_the_table_lists_each_step_once(tmp_path):
    for step in (2, 4):
        for weights, value in (("raw", 0.5), ("ema", 0.6)):
            (tmp_path / eval_results.result_name(step, weights)).write_text(json.dumps(result(step, weights, value)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-2-ema.json", "step-2.json", "step-4-ema.json",
                                                         "step-4.json"]
    assert eval_results.write_table(tmp_path, tmp_path / "out" / "results.csv") == [2, 4]
    text = (tmp_path / "out" / "results.csv").read_text().splitlines()
    variants = sorted(line.split(",")[3] for line in text[1:])
    assert variants == ["all", "all", "ema", "ema"], text
    assert eval_results.rows(result(2, "ema", 0.6, variant="data=raw"))[0]["variant"] == "data=raw · ema"
    old = result(2, "raw", 0.5)
    del old["weights"]  # a result written before EMA was scored
    assert eval_results.rows(old)[0]["variant"] == "all"
