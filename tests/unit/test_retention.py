"""Checkpoint retention: which checkpoints stay (jobs/runtime/retention.py kept/unscored), the safe
removal (prune), which evaluation result folders score a training (launcher/plan/retention.py scored_by),
and the plan's checks of `retention.*`."""
import pytest

from jobs import layout
from jobs.runtime import checkpoints, retention
from launcher.config.compose import compose
from launcher.errors import ConfigErrors
from launcher.plan.model import build_plan

pytestmark = pytest.mark.unit

T = 100  # tokens per step in these examples


def found(*steps, stop=()):
    return [(s, {"step": s, "tokens": s * T, "reason": "stop" if s in stop else "interval"}) for s in steps]


# -- the rule ----------------------------------------------------------------------------------------
def test_keep_last_keeps_the_newest_n():
    assert retention.kept(found(10, 20, 30, 40), keep_last=2, keep_every_tokens=None) == {30, 40}
    assert retention.kept(found(10, 20), keep_last=5, keep_every_tokens=None) == {10, 20}
    assert retention.kept([], keep_last=1, keep_every_tokens=None) == set()


def test_off_keeps_everything():
    assert retention.kept(found(10, 20, 30), keep_last=None, keep_every_tokens=None) == {10, 20, 30}


def test_the_newest_always_stays_and_unscored_ones_stay():
    assert retention.kept(found(10, 20, 30, 40), keep_last=1, keep_every_tokens=None, unscored={10, 20}) == {10, 20, 40}
    # an unscored step that is not a complete checkpoint adds nothing
    assert retention.kept(found(10, 20), keep_last=1, keep_every_tokens=None, unscored={99}) == {20}


def test_keep_every_tokens_keeps_the_first_checkpoint_at_or_past_each_multiple():
    # checkpoints at 1000..6000 tokens, M=2500: the first at or past 2500 (3000) and 5000 (5000)
    assert retention.kept(found(10, 20, 30, 40, 50, 60), 1, 2500) == {30, 50, 60}
    # on the grid: exactly the multiples; nothing below the first multiple
    assert retention.kept(found(10, 20, 30, 40), 1, 2000) == {20, 40}


def test_keep_every_tokens_is_stable_as_others_go():
    """The sibling of a kept one in the same token range (a stop checkpoint saved just after it) goes;
    removing it, or those before, never moves the choice."""
    before = found(20, 25, 30, stop={25})
    keep = retention.kept(before, 1, 2000)
    assert keep == {20, 30}
    after = [f for f in before if f[0] in keep]
    assert retention.kept(after, 1, 2000) == keep


def test_a_checkpoint_without_tokens_counts_for_no_multiple():
    assert retention.kept([(10, {}), (20, {"tokens": None}), (30, {})], 1, 5) == {30}


def test_unscored_needs_a_result_in_every_scoring_folder_and_skips_stop_checkpoints(tmp_path):
    a, b = tmp_path / "evals-a", tmp_path / "evals-b"  # two sibling evaluation stages
    a.mkdir(), b.mkdir()
    (a / "step-10.json").write_text("{}")
    (b / "step-10.json").write_text("{}")
    (a / "step-20.json").write_text("{}")  # b has not scored 20 yet
    f = found(10, 20, 25, stop={25})
    assert retention.unscored(f, [a, b]) == {20}
    assert retention.unscored(f, [a]) == set()
    assert retention.unscored(f, []) == set()  # no evaluation: nothing waits


# -- removal -----------------------------------------------------------------------------------------
def make(ckpt_dir, step, reason="interval"):
    p = ckpt_dir / f"checkpoint-{step}"
    p.mkdir(parents=True)
    (p / "model.safetensors").write_bytes(b"x" * step)
    checkpoints.mark(p, {"step": step, "tokens": step * T, "reason": reason})
    return p


def test_prune_removes_what_is_not_kept_and_never_an_unscored_or_the_newest(tmp_path):
    ck, ev = tmp_path / "ckpt", tmp_path / "evals"
    ev.mkdir()
    for s in (10, 20, 30, 40):
        make(ck, s)
    (ck / "checkpoint-50").mkdir()  # being saved: no marker yet
    for s in (10, 30):
        (ev / f"step-{s}.json").write_text("{}")
    removed = retention.prune(ck, {"keep_last": 1, "keep_every_tokens": None}, [ev])
    assert removed == [10, 30]
    assert sorted(p.name for p in ck.iterdir()) == ["checkpoint-20", "checkpoint-40", "checkpoint-50"]
    assert [s for s, _ in checkpoints.scan(ck)[0]] == [20, 40]


def test_an_interrupted_removal_is_never_taken_for_a_checkpoint_and_goes_next_time(tmp_path):
    ck = tmp_path / "ckpt"
    make(ck, 10), make(ck, 20)
    half = ck / f"checkpoint-10{retention.REMOVING}123"
    (ck / "checkpoint-10").rename(half)  # renamed, then the node died before the delete
    assert [s for s, _ in checkpoints.scan(ck)[0]] == [20]
    assert checkpoints.resume_point(ck, lambda _: None)[0] == 20  # and not set aside as a partial
    retention.prune(ck, {"keep_last": 1}, [])
    assert sorted(p.name for p in ck.iterdir()) == ["checkpoint-20"]


def test_a_second_pruner_finds_it_gone(tmp_path):
    ck = tmp_path / "ckpt"
    p = make(ck, 10)
    assert retention.remove(p) is True
    assert retention.remove(p) is False


# -- the plan ----------------------------------------------------------------------------------------
P = "pipeline.stages.train"
TRAIN = ["pipeline=train", "cluster=local", "pipeline.vars.data=/tmp/nodata", "pipeline.vars.tokenizer=/tmp/no.json"]


def errors_of(*overrides, pipeline=TRAIN):
    with pytest.raises(ConfigErrors) as e:
        build_plan([compose([*pipeline, *overrides])], [[]])
    return {x.key: x.message for x in e.value.errors}


@pytest.mark.parametrize("override,key", [
    (f"{P}.retention.keep_last=0", f"{P}.retention.keep_last"),
    (f"{P}.retention.keep_last=-2", f"{P}.retention.keep_last"),
    (f"{P}.retention.keep_last=1.5", f"{P}.retention.keep_last"),
    (f"{P}.retention.keep_last=true", f"{P}.retention.keep_last"),
    (f"{P}.retention.keep_every_tokens=0", f"{P}.retention.keep_every_tokens"),
    (f"{P}.retention.keep_every_tokens=abc", f"{P}.retention.keep_every_tokens"),
])
def test_bad_retention_settings_name_the_stage_and_key(override, key):
    errs = errors_of(override)
    assert key in errs and "must be a positive integer" in errs[key], errs


def test_a_kind_without_trainer_checkpoints_cannot_have_retention():
    errs = errors_of("pipeline.stages.fanout.retention.keep_last=2", pipeline=["pipeline=smoke", "cluster=local"])
    key = "pipeline.stages.fanout.retention"
    assert key in errs and "kind=command (as configured) writes no Trainer checkpoints" in errs[key], errs


def test_retention_reaches_the_payload_only_when_on_and_the_specs_name_the_scorers():
    from launcher.plan.render import stage_spec

    off = build_plan([compose(TRAIN)], [[]])
    on = build_plan([compose([*TRAIN, f"{P}.retention.keep_every_tokens=131072"])], [[]])
    assert "retention" not in off.stages["train"].payloads[0]
    assert on.stages["train"].payloads[0]["retention"] == {"keep_last": 1, "keep_every_tokens": 131072}
    assert on.stages["train"].hash != off.stages["train"].hash
    for stage in ("train", "evaluate"):
        spec = stage_spec(on, on.stages[stage], layout.Path("/runs/r"), "r")
        assert spec["retention"] == {"train": {"policy": [{"keep_last": 1, "keep_every_tokens": 131072}],
                                               "scored_by": {"0": ["stages/evaluate/evals/0"]}}}
    assert "retention" not in stage_spec(off, off.stages["train"], layout.Path("/runs/r"), "r")


def test_scorers_of_a_shared_training_and_sibling_evaluations():
    """Points sharing one training each score it through their own evaluation point unless they share
    that too; a sibling evaluation stage scores it as well."""
    from launcher.plan.model import Dep, StagePlan
    from launcher.plan.retention import scored_by

    def st(name, kind, shared, parent=None):
        return StagePlan(name=name, kind=kind, tasks_per_point=1, points=3, throttle=None, time_min=10,
                         resources={}, requeue={}, singleton=False,
                         deps=[Dep(parent=parent, kind="after", declared="after")] if parent else [],
                         hash="h", payloads=[{}] * 3, shared=shared)

    class Plan:
        stages = {"train": st("train", "pretrain", [0, 0, 2]), "ev": st("ev", "evaluate", [0, 1, 2], "train"),
                  "ev2": st("ev2", "evaluate", [0, 0, 2], "train")}

    got = scored_by(Plan, Plan.stages["train"])
    assert got == {"0": ["stages/ev/evals/0", "stages/ev/evals/1", "stages/ev2/evals/0"],
                   "2": ["stages/ev/evals/2", "stages/ev2/evals/2"]}


# -- gc ----------------------------------------------------------------------------------------------
def make_run(root, name, days_old, reads=(), now=1_000_000_000.0):
    import json

    d = root / name
    (d / "stages" / "s" / "out" / "0").mkdir(parents=True)
    (d / "run.json").write_text(json.dumps({"id": name, "created": now - days_old * 86400}))
    cached = {str(i): {"run": str(root / r), "point": 0, "hash": "h"} for i, r in enumerate(reads)}
    (d / "plan.json").write_text(json.dumps({"stages": [{"name": "s", "cached": cached}]}))
    return d


def test_gc_old_runs_go_unless_a_kept_run_reads_them_and_chains_go_together(tmp_path):
    from launcher.run import gc

    now = 1_000_000_000.0
    make_run(tmp_path, "a", 40)
    b = make_run(tmp_path, "b", 35, reads=["a"])  # old, reads a: both go together
    c = make_run(tmp_path, "c", 50)
    make_run(tmp_path, "d", 1, reads=["c"])  # new, reads c: c stays
    e = make_run(tmp_path, "e", 60)  # old but running: stays
    partial = b / "stages" / "s" / "out" / "0" / ".0.partial-5-0"
    partial.mkdir()
    items, notes = gc.collect(tmp_path, 30 * 86400, lambda r: r == e, now=now)
    assert sorted(i.path.name for i in items) == ["a", "b"]  # b's partial goes with b, not twice
    assert any(n.startswith(f"{c}: old, but a run reads") for n in notes)
    assert any(n.startswith(f"{e}: old, but a task of it is queued or running") for n in notes)


def test_gc_leaves_a_run_whose_scheduler_does_not_answer_and_removes_partials_of_the_others(tmp_path):
    from launcher.run import gc

    a, b = make_run(tmp_path, "a", 1), make_run(tmp_path, "b", 1)
    for r in (a, b):
        (r / "stages" / "s" / "out" / "0" / ".0.partial-5-0").mkdir()
        (r / "stages" / "s" / "ckpt" / "0" / "checkpoint-4.partial-20260101-000000").mkdir(parents=True)
        (r / "stages" / "s" / "ckpt" / "0" / "checkpoint-6").mkdir()  # complete or not: resume's business
    items, notes = gc.collect(tmp_path, 30 * 86400, lambda r: None if r == a else False, now=1_000_000_000.0)
    assert sorted(str(i.path.relative_to(tmp_path)) for i in items) == [
        "b/stages/s/ckpt/0/checkpoint-4.partial-20260101-000000", "b/stages/s/out/0/.0.partial-5-0"]
    assert notes == [f"{a}: left alone: its scheduler did not answer"]


@pytest.mark.parametrize("text,seconds", [("30d", 30 * 86400), ("12h", 43200), ("90m", 5400), ("2w", 14 * 86400),
                                          ("45", 45 * 86400), ("10s", 10)])
def test_gc_ages(text, seconds):
    from launcher.run import gc

    assert gc.parse_age(text) == seconds


def test_gc_bad_age_is_a_usage_error():
    from launcher.run import gc
    from launcher.errors import UsageError

    with pytest.raises(UsageError, match="--older-than"):
        gc.parse_age("thirty days")
