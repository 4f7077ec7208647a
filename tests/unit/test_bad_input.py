"""Edge cases of the bad-input checks of issue 16 that the corpus (tests/bad_configs) does not pin:
options a kind/trainer/backend ignores, names that collide after a transformation, secrets anywhere,
optimizer arithmetic, dataclass field targets."""
import json
import os
import subprocess
import sys

import pytest

from launcher.plan import ignored, secrets
from launcher.config.compose import compose
from launcher.plan.model import build_plan

from plan_errors import S, TRAIN, errors_of


def plans(*overrides):
    build_plan([compose(list(overrides))], [[]])


# -- options that would be ignored ---------------------------------------------------------------------
def test_an_option_set_to_its_default_is_not_refused():
    plans("pipeline=smoke", "cluster=local", f"{S}.shards.train.tokens=1000000", f"{S}.reduce.align.beta=0.1")


def test_every_ignored_section_of_another_kind_names_its_first_key():
    errs = errors_of("pipeline=smoke", "cluster=local", f"{S}.shards.align.lr=0.1", f"{S}.shards.align.beta=0.5",
                     f"{S}.reduce.command=ls", f"{S}.fanout.target=jobs.demo.smoke:reduce")
    assert "only kind=align reads it" in errs[("shards", f"{S}.shards.align.lr")]
    assert ("shards", f"{S}.shards.align.beta") not in errs  # one key per section is enough
    assert "only kind=command reads it" in errs[("reduce", f"{S}.reduce.command")]
    assert "only kind=python reads it" in errs[("fanout", f"{S}.fanout.target")]


def test_schedule_specific_and_backend_specific_options():
    plans(*TRAIN, f"{S}.train.train.optimizer.schedule=wsd", f"{S}.train.train.optimizer.decay_fraction=0.5")
    errs = errors_of(*TRAIN, f"{S}.train.train.optimizer.zero_stage=1", f"+{S}.train.train.nanotron.general.x=1")
    assert {k for _, k in errs} >= {f"{S}.train.train.optimizer.zero_stage", f"{S}.train.train.nanotron"}


def test_stage_defaults_are_what_omegaconf_makes_of_the_schema():
    """ignored.stage_defaults reads the dataclasses directly; OmegaConf's structured node is the reference."""
    from omegaconf import OmegaConf

    from launcher.config.schema import Stage

    reference = OmegaConf.to_container(OmegaConf.structured(Stage), resolve=False, enum_to_str=True)
    assert json.dumps(ignored.stage_defaults(), sort_keys=True) == json.dumps(reference, sort_keys=True)


def test_interpolated_defaults_are_not_judged():
    """train.model and the seeds come from the root config (${model}, ${seed}): not a stage's setting."""
    assert ignored.stage_defaults()["train"]["model"] == "${model}"
    plans("pipeline=smoke", "cluster=local", "seed=7", "model.num_layers=4")


# -- collisions ----------------------------------------------------------------------------------------
def test_names_that_do_not_collide_pass():
    plans("pipeline=smoke", "cluster=local")  # shards, reduce, fanout, checkpointing
    plans("pipeline=data", "cluster=local")  # a minhash stage dedup and its parts


# -- secrets -------------------------------------------------------------------------------------------
def secret_errors(monkeypatch, value, *overrides, name="BAD_INPUT_SECRET"):
    monkeypatch.setenv(name, value)
    cfg = compose(["pipeline=smoke", "cluster=local", f"cluster.secrets=[{name}]", *overrides])
    return {e.key: e.message for e in secrets.check([cfg])}


def test_a_long_secret_is_found_inside_strings_a_short_one_only_whole(monkeypatch):
    assert "pipeline.stages.fanout.command" in secret_errors(monkeypatch, "tok-0123456789",
                                                             f"{S}.fanout.command='echo tok-0123456789 >x'")
    assert secret_errors(monkeypatch, "abc", f"{S}.fanout.command='echo abc'") == {}
    assert list(secret_errors(monkeypatch, "abc", f"+{S}.reduce.params.k=abc")) == [f"{S}.reduce.params.k"]


def test_messages_never_hold_the_value(monkeypatch):
    found = secret_errors(monkeypatch, "tok-0123456789", f"+{S}.shards.env.BAD_INPUT_SECRET=tok-0123456789")
    assert found and not any("tok-0123456789" in m for m in found.values())


def test_the_secrets_file_and_publish_tokens_are_secrets(tmp_path, monkeypatch):
    f = tmp_path / "s.env"
    f.write_text("# tokens\nFILE_TOKEN=from-the-file-123\n")
    cfg = compose(["pipeline=smoke", "cluster=local", f"cluster.secrets_file={f}",
                   f"+{S}.reduce.params.k=from-the-file-123", f"+{S}.shards.env.FILE_TOKEN=x"])
    assert {e.key for e in secrets.check([cfg])} == {f"{S}.reduce.params.k", f"{S}.shards.env.FILE_TOKEN"}
    monkeypatch.setenv("PUBLISH_TOKEN_X", "hf_publish_0123456789")
    cfg = compose(["pipeline=publish", "cluster=local", "pipeline.vars.source=/s", "pipeline.vars.repo_id=o/n",
                   f"{S}.publish.publish.token_env=PUBLISH_TOKEN_X", "+pipeline.vars.t=hf_publish_0123456789"])
    assert [e.key for e in secrets.check([cfg])] == ["pipeline.vars.t"]


def test_every_sweep_point_is_checked(monkeypatch):
    monkeypatch.setenv("BAD_INPUT_SECRET", "tok-0123456789")
    configs = [compose(["pipeline=smoke", "cluster=local", "cluster.secrets=[BAD_INPUT_SECRET]",
                        f"+{S}.reduce.params.k={v}"]) for v in ("fine", "tok-0123456789")]
    assert [e.key for e in secrets.check(configs)] == [f"{S}.reduce.params.k"]


# -- optimizer arithmetic ------------------------------------------------------------------------------
@pytest.mark.parametrize("warmup,ok", [(0, True), (255, True), (256, False), (-1, False)])
def test_warmup_must_end_before_the_last_of_256_steps(warmup, ok):
    overrides = [*TRAIN, f"{S}.train.train.optimizer.warmup_steps={warmup}"]
    if ok:
        plans(*overrides)
    else:
        assert (("train", f"{S}.train.train.optimizer.warmup_steps")) in errors_of(*overrides)


def test_a_one_step_run_may_warm_up_as_long_as_it_likes():
    """jobs/adapters/trainer.py accepts warmup >= steps when there is one step (nothing to schedule)."""
    plans(*TRAIN, "pipeline.vars.tokens=1024", "pipeline.vars.checkpoint_every_tokens=0",
          f"{S}.train.train.optimizer.warmup_steps=5")


@pytest.mark.parametrize("key,value", [("lr", "nan"), ("lr", "0"), ("min_lr", "1.0"), ("beta1", "-0.1"),
                                       ("beta2", "1.0"), ("eps", "0"), ("weight_decay", "-1"), ("clip_grad", "inf")])
def test_adamw_ranges(key, value):
    assert ("train", f"{S}.train.train.optimizer.{key}") in errors_of(*TRAIN, f"{S}.train.train.optimizer.{key}={value}")


# -- dataclass fields as preflight targets -------------------------------------------------------------
def test_a_field_target_asks_the_dataclass():
    request = {"targets": ["jobs.context.TaskContext#params", "jobs.context.TaskContext#parms",
                           "launcher.kinds.align.Align#beta"]}
    p = subprocess.run([sys.executable, "-m", "jobs.runtime.targets"], input=json.dumps(request), capture_output=True,
                       text=True, cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))), timeout=60)
    found = json.loads(p.stdout)
    assert list(found) == ["jobs.context.TaskContext#parms"]
    assert "has no field 'parms'; did you mean 'params'?" in found["jobs.context.TaskContext#parms"]
