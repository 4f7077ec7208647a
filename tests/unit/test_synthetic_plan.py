"""pipeline=synthetic (issue 22 item 4, docs/synthetic.md) at plan time, the mix weights' checks and result.json's record of the mix (jobs/adapters/trainer.py
mix_summary over MixedTokens)."""
import pytest

from launcher.config.compose import compose, sweep_points
from launcher.plan.model import build_plan

from plan_errors import S, errors_of

pytestmark = pytest.mark.unit
SYNTHETIC = ["pipeline=synthetic", "cluster=local"]


def test_the_ablation_shares_every_stage_before_train_and_differs_only_in_the_synthetic_weight():
    from launcher.plan import key_facts, keys

    points = sweep_points([*SYNTHETIC, "pipeline.vars.synthetic_weight=0,0.25"], True)
    plan = build_plan([compose(p) for p in points], points)
    keys.assign(plan, key_facts.gather(plan, "/tmp/launcher-keys-root"))
    for name in ("corpus", "merge", "generator", "synth", "synthetic_docs", "synthetic_tokens"):
        assert plan.stages[name].shared == [0, 0], name  # computed once for both variants
    train = plan.stages["train"]
    assert train.shared in ([], [0, 1])  # each point its own (empty: no point borrows another's)
    assert [[d["weight"] for d in p["train"]["data"]] for p in train.payloads] == [[1.0, 0.0], [1.0, 0.25]]
    assert {d.parent for d in train.deps} == {"merge", "tokenizer", "synthetic_tokens"}
    synth = plan.stages["synth"].payloads[0]["generate"]
    assert synth["model"] == "{input}/model" and synth["seeds"]["limit"] == 32


def test_the_generations_become_documents_through_datatrove_s_reader_with_the_completion_as_text():
    plan = build_plan([compose(SYNTHETIC)], [[]])
    reader = plan.stages["synthetic_docs"].payloads[0]["blocks"][0]
    assert reader["text_key"] == "completion" and reader["glob_pattern"] == "**/generations.jsonl"
    assert plan.stages["synthetic_tokens"].payloads[0]["blocks"][1]["tokenizer_name_or_path"] == \
        "{input:tokenizer}/tokenizer.json"  # the web corpus's: one vocabulary for both sources


@pytest.mark.parametrize("override, key, message", [
    ("pipeline.vars.synthetic_weight=-0.5", f"{S}.train.train.data.1.weight", "a sampling weight is >= 0"),
    (f"{S}.train.train.data.0.weight=-1", f"{S}.train.train.data.0.weight", "a sampling weight is >= 0"),
    (f"{S}.train.train.data=[]", f"{S}.train.train.data", "needs at least one tokenized folder"),
    (f"{S}.train.train.data.1.folder='{{input:web}}'", f"{S}.train.train.data.1.folder",
     "'web' is not a stage this one waits for"),
])
def test_a_bad_mix_is_refused_naming_the_stage_and_key(override, key, message):
    errs = errors_of(*SYNTHETIC, override)
    assert message in errs[("train", key)], errs


def test_a_mix_whose_every_weight_is_zero_is_refused():
    errs = errors_of(*SYNTHETIC, "pipeline.vars.synthetic_weight=0", f"{S}.train.train.data.0.weight=0")
    assert "every weight is 0" in errs[("train", f"{S}.train.train.data")]


class Folder(list):
    """A tokenized folder stand-in: samples are {"input_ids": ...} items."""


def test_result_json_records_each_folder_s_weight_share_and_the_samples_drawn_from_it():
    pytest.importorskip("numpy")
    from jobs.adapters.trainer import MixedTokens, mix_summary

    web, syn = Folder([{}] * 500), Folder([{}] * 20)
    data = {"/web": 1.0, "/syn": 0.25}
    mixed = MixedTokens([web, syn], list(data.values()), num_samples=4000, seed=1)
    web_row, syn_row = mix_summary(data, [web, syn], mixed, seq_len=128)
    assert (web_row["weight"], syn_row["weight"], syn_row["share"]) == (1.0, 0.25, 0.2)
    assert web_row["drawn"] + syn_row["drawn"] == 4000
    # binomial(4000, 0.2): sd 25 samples; 4 sd either side
    assert abs(syn_row["drawn"] - 800) < 100 and syn_row["drawn_tokens"] == syn_row["drawn"] * 128
    assert syn_row["samples"] == 20 and syn_row["passes"] == pytest.approx(syn_row["drawn"] / 20)

    without = MixedTokens([web, syn], [1.0, 0.0], num_samples=4000, seed=1)
    assert mix_summary({"/web": 1.0, "/syn": 0.0}, [web, syn], without, 128)[1]["drawn"] == 0
