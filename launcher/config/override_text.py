"""The override texts of a large sweep without Hydra's ANTLR parser: `key=value` with a plain key and a
plain number or name as value, the form a sweep's points take (`seed=3`, `optim.lr=0.001`,
`data.name=raw`), parsed to the Override that Hydra's OverridesParser gives for the same text.

Hydra parses every point's overrides again (~0.5 ms each: BasicSweeper writes the points as text, each
job parses its own). Anything outside the forms below goes to Hydra's parser; tests/unit/
test_override_text.py checks the equality with it text by text, the edges included (`007` and `00.5`
are strings to Hydra, `1_000` an int: those go to the parser).

Forms (hydra/grammar/OverrideLexer.g4: ID, DOT_PATH, INT, FLOAT): key an ID, or IDs and unsigned INTs
joined by dots, with no `+`/`++`/`~` prefix and no `@package`; value an INT without leading zeros or underscores, a
POINT_FLOAT `<int>.<digits>` likewise, or an ID that is not one of Hydra's keywords
(true/false/null/inf/nan, any case)."""
from __future__ import annotations

import re
from typing import Any, Optional

_ID = r"[A-Za-z_][A-Za-z0-9_\-]*"
_KEY = rf"{_ID}(?:\.(?:{_ID}|0|[1-9][0-9]*))*"
_INT = re.compile(rf"({_KEY})=([+-]?(?:0|[1-9][0-9]*))")
_FLOAT = re.compile(rf"({_KEY})=([+-]?(?:0|[1-9][0-9]*)\.[0-9]+)")
_NAME = re.compile(rf"({_KEY})=([A-Za-z_][A-Za-z0-9_]*)")
_KEYWORDS = frozenset({"true", "false", "null", "inf", "nan"})


def parse(text: str, config_loader: Any = None) -> Optional[Any]:
    """Hydra's Override for `text` when it has one of the forms of the module docstring, else None (the
    caller parses it with Hydra's OverridesParser); `config_loader` as that parser was created with."""
    from hydra.core.override_parser.types import Override, OverrideType, ValueType

    m = _INT.fullmatch(text)
    value: Any = int(m.group(2)) if m else None
    if m is None:
        m = _FLOAT.fullmatch(text)
        value = float(m.group(2)) if m else None
    if m is None:
        m = _NAME.fullmatch(text)
        if m is None or m.group(2).lower() in _KEYWORDS:
            return None
        value = m.group(2)
    return Override(type=OverrideType.CHANGE, key_or_group=m.group(1), value_type=ValueType.ELEMENT,
                    _value=value, package=None, input_line=text, config_loader=config_loader)
