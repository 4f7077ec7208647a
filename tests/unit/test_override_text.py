"""launcher/config/override_text.py: the texts it takes give exactly Hydra's Override (OverridesParser),
and it leaves every other text to Hydra's parser."""
from __future__ import annotations

import random

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from launcher.config import override_text

pytestmark = pytest.mark.unit

TAKEN = ["seed=3", "a.b=-3", "k=+0", "k=-0", "optim.lr=0.001", "k=-0.0", "k=0.10", "data=raw", "a-b=1",
         "x.0.y=2", "a.b-c.d=1", "k=Null_x", "k=nan_", "k=_x", "k=trueish", "big=12345678901234567890"]
LEFT = ["k=007", "k=00.5", "k=1_000", "k=1e-3", "k=1.", "k=.5", "k=inf", "k=NaN", "k=True", "k=null",
        "k=FALSE", "+k=1", "++k=1", "~k", "~k=1", "a@p=1", "a/b=c", "k=a-b", "k=a b", "k= 5", "k=5 ",
        "k=[1,2]", "k={a:1}", "k=${x}", "k='1'", "k=\"x\"", "k=1,2", "k=range(3)", "a.0b=1", "a.-x=1",
        "k=é", "é=1", "k=", "$k=1", "k=a.b", "k=1:2"]


def _same(text: str) -> None:
    ours, hydras = override_text.parse(text), OverridesParser.create().parse_override(text)
    assert ours == hydras and type(ours._value) is type(hydras._value), (text, ours, hydras)


@pytest.mark.parametrize("text", TAKEN)
def test_a_taken_text_is_hydras_override(text):
    _same(text)


@pytest.mark.parametrize("text", LEFT)
def test_other_texts_are_left_to_hydras_parser(text):
    assert override_text.parse(text) is None


def test_random_texts_taken_are_hydras():
    """Random texts over the characters of the forms' edges: whatever the fast path takes, Hydra parses
    to the same Override (a text Hydra refuses is never taken)."""
    rng, alphabet, taken = random.Random(0), "ab_0123-.+eE", 0
    for _ in range(3000):
        text = "".join(rng.choice("ab.") for _ in range(rng.randint(1, 4))) + "=" + \
            "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6)))
        if override_text.parse(text) is not None:
            taken += 1
            _same(text)
    assert taken > 300  # the random texts did exercise the fast path
