"""The Backend protocol (launcher/backends.py): every registered scheduler implements it, the registry
refuses a name that is none, and no launcher code outside launcher/backends.py, launcher/slurm/ and
launcher/local/ compares cluster.backend with a backend's name (AST-based, like the kind-name check)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from launcher import backends
from launcher.errors import LauncherError

ROOT = Path(__file__).resolve().parents[2]
OWN = ("launcher/backends.py", "launcher/slurm/", "launcher/local/")


@pytest.mark.parametrize("name", backends.names())
def test_each_backend_implements_the_protocol(name, tmp_path):
    cls = backends.get(name)
    assert cls.name == name
    for attr, kind in (("poll_s", float), ("srun_steps", bool), ("runs_containers", bool), ("waits_on_jobs", bool)):
        assert isinstance(getattr(cls, attr), kind), attr
    backend = backends.for_cluster({"backend": name, "name": "x"}, tmp_path)
    assert isinstance(backend.lost_grace_s, float)
    for method in ("submit", "query", "cancel", "facts", "checks"):
        assert callable(getattr(backend, method)), method
    if cls.waits_on_jobs:
        assert callable(backend.job_states)


def test_local_facts_need_no_scheduler(tmp_path):
    local = backends.for_cluster({"backend": "local", "name": "local"}, tmp_path)
    facts = local.facts()
    assert facts.info is None and facts.max_array_size == 1_000_000 and facts.accounting is None
    assert local.checks(facts) == {} and local.query([]) == {}


def test_an_unknown_backend_is_refused_with_the_names():
    with pytest.raises(LauncherError, match=r"cluster.backend must be 'slurm' or 'local', got 'pbs'"):
        backends.for_cluster({"backend": "pbs"}, Path("/nonexistent"))


def _is_backend_expr(node: ast.AST) -> bool:
    """`backend`, `x.backend`, `x["backend"]`, `x.get("backend")`: an expression that holds a backend name."""
    if isinstance(node, ast.Name):
        return node.id == "backend"
    if isinstance(node, ast.Attribute):
        return node.attr == "backend"
    if isinstance(node, ast.Subscript):
        return isinstance(node.slice, ast.Constant) and node.slice.value == "backend"
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" and node.args:
        return isinstance(node.args[0], ast.Constant) and node.args[0].value == "backend"
    return False


def _names_in(node: ast.AST) -> set:
    return {n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and n.value in backends.names()}


def backend_tests(source: str, where: str = "") -> list:
    """'where:line code' of every comparison of a backend expression with a backend's name."""
    return [f"{where}:{n.lineno} {ast.unparse(n)}" for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Compare)
            and any(map(_is_backend_expr, [n.left, *n.comparators])) and _names_in(n)]


def test_no_launcher_code_outside_the_backends_tests_a_backend_name():
    found = [hit for path in sorted((ROOT / "launcher").rglob("*.py"))
             if not str(path.relative_to(ROOT)).startswith(OWN)
             for hit in backend_tests(path.read_text(), str(path.relative_to(ROOT)))]
    assert found == []


@pytest.mark.parametrize("code", [
    'if cl["backend"] != "local": pass',
    'x = run.meta.get("backend") == "local"',
    'x = backend in ("slurm", "local")',
    'x = "slurm" == plan.cluster.backend',
])
def test_the_backend_name_check_finds_each_form(code):
    assert len(backend_tests(code)) == 1


def test_the_backend_name_check_leaves_other_names_alone():
    assert backend_tests('x = train["backend"] == "nanotron"\ny = params["cluster"] == "local"') == []
