"""What building a plan refuses, as {(stage, key): message}: the shared helper of the unit tests of
plan-time checks (test_bad_input.py, test_tracking.py)."""
import pytest

from launcher.config.compose import compose
from launcher.errors import ConfigErrors
from launcher.plan.model import build_plan

S = "pipeline.stages"
TRAIN = ["pipeline=train", "cluster=local", "pipeline.vars.data=/d", "pipeline.vars.tokenizer=/t"]


def errors_of(*overrides):
    cfg = compose(list(overrides))
    with pytest.raises(ConfigErrors) as e:
        build_plan([cfg], [[]])
    return {(x.stage, x.key): x.message for x in e.value.errors}
