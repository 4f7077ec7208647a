"""Options that the chosen stage kind, trainer or backend would silently ignore: refused, so that a
setting the operator made is never dropped on the way to the task (an SFT stage given DPO's `beta`, a
command stage given `train.tokens`, nanotron's `parallelism.tp_mode` on the hf backend...).

A field counts as SET when its value differs from the schema's default (launcher/config/schema.py); an
option written with exactly its default value is harmless, since nothing changes whether it is read
or not. Fields whose default is an interpolation (`train.model: ${model}`, the seeds) are not judged
here: their value comes from the root config. Pure: plain config dicts in, errors out."""
from __future__ import annotations

import functools
from typing import Any, Dict, Iterator, List, Tuple

from launcher.errors import ConfigError

def kind_sections() -> Dict[str, Tuple[str, ...]]:
    """Per stage kind, the keys of `Stage` its tasks read (Kind.reads; besides what every kind reads:
    tasks, throttle, after, singleton, params, env, resources, requeue)."""
    from launcher import kinds

    return {k.name: k.read_keys() for k in kinds.all_kinds()}


def only_for() -> Dict[str, list]:
    """Within a section: (the field that chooses, every value it may take -> the fields only that value
    reads) (Kind.only_for). A choice the schema does not know (a typo) is reported by the kind's own
    checks, not here."""
    from launcher import kinds

    return {section: rules for k in kinds.all_kinds() for section, rules in k.only_for.items()}


@functools.lru_cache(maxsize=1)
def stage_defaults() -> Dict[str, Any]:
    """A stage with every field at its schema default, as plain containers (interpolations as text):
    what OmegaConf.to_container(OmegaConf.structured(Stage), resolve=False, enum_to_str=True) gives
    (tests/unit/test_bad_input.py holds the two equal), read from the dataclasses directly, ~20x
    faster than building the OmegaConf node (a cold `launcher plan` pays it once)."""
    from launcher.config.schema import Stage

    return _defaults_of(Stage)


def _defaults_of(cls) -> Dict[str, Any]:
    import dataclasses
    import enum

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, enum.Enum):
            return value.name
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            value = "???"  # OmegaConf's MISSING
        out[f.name] = _defaults_of(value) if isinstance(value, type) and dataclasses.is_dataclass(value) else plain(value)
    return out


def set_fields(value: Any, default: Any, key: str) -> Iterator[Tuple[str, Any]]:
    """(key, value) of every leaf of `value` that differs from `default`."""
    if isinstance(default, str) and default.startswith("${"):
        return  # taken from the root config; not the stage's own setting
    if isinstance(value, dict) and isinstance(default, dict) and default:
        for k, v in value.items():
            if k in default:
                yield from set_fields(v, default[k], f"{key}.{k}")
            else:
                yield f"{key}.{k}", v
    elif value != default:
        yield key, value


def _get(node: Dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def check(plain: List[Dict[str, Any]], errors: List[ConfigError]) -> None:
    """Every option a stage sets that its kind (or trainer, backend, schedule) does not read, in each
    point's config. A stage mapping that several points share (launcher/config/incremental.py: the
    same object) is checked once."""
    seen = set()
    sections_of, rules_of = kind_sections(), only_for()
    sections = sorted({s for secs in sections_of.values() for s in secs})

    @functools.lru_cache(maxsize=None)
    def judged(kind: Any) -> Tuple[str, ...]:
        """The sections _check_stage reads for a stage of this kind: the other kinds' and its own that
        have rules (a swept command, read whole by kind=command, is not judged)."""
        return tuple(s for s in sections if s not in sections_of.get(kind, ()) or s in rules_of)

    for cfg in plain:
        for name, st in cfg["pipeline"]["stages"].items():
            # what is checked: the kind and the sections judged; the configs live meanwhile, so an id
            # names one object
            checked = (name, st.get("kind"), *(id(st.get(s)) for s in judged(st.get("kind"))))
            if checked not in seen:
                seen.add(checked)
                _check_stage(name, st, errors)


def _check_stage(name: str, st: Dict[str, Any], errors: List[ConfigError]) -> None:
    defaults = stage_defaults()
    sections_of, rules_of = kind_sections(), only_for()
    owner = {section: kind for kind, sections in sections_of.items() for section in sections}
    kind, key = st.get("kind"), f"pipeline.stages.{name}"
    for section, read_by in owner.items():
        if section in sections_of.get(kind, ()) or section not in st:
            continue
        for k, v in set_fields(st[section], defaults[section], f"{key}.{section}"):
            users = [kd for kd, secs in sections_of.items() if section in secs]
            errors.append(ConfigError(
                f"is set ({_short(v)}) but only kind={'/'.join(users)} reads it; this stage is kind={kind}, "
                f"so it would be ignored", stage=name, key=k))
            break  # one key per section says it
    for section, rules in rules_of.items():
        if section not in sections_of.get(kind, ()):
            continue
        for chooser, only in rules:
            chosen = _get(st[section], chooser)
            if chosen not in only:
                continue
            # a field several values read (max_length: sft, dpo, reward) is refused only where none does
            others = dict.fromkeys(f for value, fields in only.items() if value != chosen for f in fields)
            for field in (f for f in others if f not in only[chosen]):
                got, default = _get(st[section], field), _get(defaults[section], field)
                if list(set_fields(got, default, "")):
                    readers = "/".join(_show(v) for v, fields in only.items() if field in fields)
                    errors.append(ConfigError(
                        f"is set ({_short(got)}) but only {section}.{chooser}={readers} reads it; this "
                        f"stage has {section}.{chooser}={_show(chosen)}, so it would be ignored",
                        stage=name, key=f"{key}.{section}.{field}"))


def _show(v: Any) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."
