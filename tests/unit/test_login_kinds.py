"""The login side's kind registry (launcher/kinds): one module per kind behind the Kind base class,
imported lazily; parity with the schema and the node registry; the Problems form."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from jobs import kinds as node_kinds
from launcher import kinds
from launcher.errors import ConfigError
from launcher.kinds.base import Kind, Problems

ROOT = Path(__file__).resolve().parents[2]


def test_the_schema_the_login_registry_and_the_node_registry_know_the_same_kinds():
    """Parity: a config may name exactly the kinds the login registry has; each of them runs on the
    node (jobs.kinds BUILTIN) or is expanded by the plan into one that does (EXPANDED); every config
    section of Stage beyond the common fields is one kind's."""
    from launcher.config import schema

    assert set(kinds.names()) == node_kinds.names()
    for name in kinds.names():
        assert node_kinds.EXPANDED.get(name, name) in node_kinds.BUILTIN
    common = {f[0] for f in schema.STAGE_HEAD + schema.STAGE_TAIL}
    sections = {f.name: f.type for f in dataclasses.fields(schema.Stage) if f.name not in common}
    assert sections == {k.section: k.schema for k in kinds.all_kinds() if k.section}


@pytest.mark.parametrize("name", list(kinds.BUILTIN))
def test_every_builtin_kind_is_a_module_of_its_own(name):
    kind = kinds.get(name)
    assert isinstance(kind, Kind) and kind.name == name
    assert type(kind).__module__ == f"launcher.kinds.{name}"
    if name not in node_kinds.EXPANDED:
        assert kind.runner == f"jobs.kinds.{name}"
    assert kind.hub_access in ("none", "inherit", "write") and kind.output_layout in ("task", "datatrove")
    assert (kind.section is None) == (kind.schema is None)


def test_the_registry_imports_a_kind_only_when_asked_and_no_stage_library_ever():
    code = ("import sys, launcher.kinds as k\n"
            "before = sorted(m for m in sys.modules if m.startswith('launcher.kinds.') and m != 'launcher.kinds.base')\n"
            "k.get('serve')\n"
            "after = sorted(m for m in sys.modules if m.startswith('launcher.kinds.') and m != 'launcher.kinds.base')\n"
            "k.all_kinds()\n"
            "libs = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'datatrove', 'trl', "
            "'lighteval', 'vllm', 'nanotron', 'accelerate', 'peft', 'huggingface_hub') or m.startswith('jobs.kinds'))\n"
            "print(before, after, libs)")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[] ['launcher.kinds.serve'] []"


def test_a_kind_module_imports_no_other_kind():
    """Kinds are independent: they ask another kind through the registry (launcher.kinds.get), never by
    importing its module."""
    import ast

    own = set(kinds.BUILTIN)
    bad = []
    for path in sorted((ROOT / "launcher" / "kinds").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [f"{node.module}.{a.name}" for a in node.names] if isinstance(node, ast.ImportFrom) and node.module else []
            bad += [f"{path.name}: {n}" for n in names
                    if n.startswith("launcher.kinds.") and n.split(".")[2] in own - {path.stem}]
    assert bad == []


def test_an_unknown_kind_names_the_known_ones_and_the_closest():
    with pytest.raises(KeyError, match="unknown stage kind 'sevre' .*command, python.*; did you mean 'serve'"):
        kinds.get("sevre")


def test_an_unknown_kind_in_a_config_is_a_config_error_naming_the_stage_and_key():
    from launcher.config.compose import compose
    from launcher.errors import ConfigErrors
    from launcher.plan.model import build_plan

    cfg = compose(["pipeline=smoke", "cluster=local", "pipeline.stages.reduce.kind=pyhton"])
    with pytest.raises(ConfigErrors) as e:
        build_plan([cfg], [[]])
    assert [(x.stage, x.key) for x in e.value.errors] == [("reduce", "pipeline.stages.reduce.kind")]
    assert "did you mean 'python'?" in e.value.errors[0].message


def test_problems_keep_the_stage_and_key_form():
    errors: list = []
    p = Problems("train", errors)
    assert not p
    p.add("train.tokens", "must be >= 1, got 0")
    p.add_at("cluster.hub_cache", "set it")
    assert p and all(isinstance(e, ConfigError) for e in errors)
    assert [e.render() for e in errors] == ["stage 'train': pipeline.stages.train.train.tokens: must be >= 1, got 0",
                                            "stage 'train': cluster.hub_cache: set it"]
