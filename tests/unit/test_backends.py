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
    for method in ("submit", "query", "cancel", "facts", "checks", "check_run", "check_stage", "check_limits",
                   "check_external"):
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


# -- the stage checks are the backend's (Backend.check_stage; launcher/slurm/checks.py, launcher/local/checks.py)

def _smoke(cluster: str, *overrides):
    from launcher.config.compose import compose
    from launcher.plan.model import build_plan

    return build_plan([compose(["pipeline=smoke", f"cluster={cluster}", *overrides])], [[]])


def test_preflight_reports_what_the_backends_check_stage_finds(tmp_path):
    from launcher.errors import ConfigError
    from launcher.plan.preflight import preflight

    seen = []

    class Refusing:  # a scheduler of a test: refuses the stage 'reduce', whatever it asks for
        @staticmethod
        def check_run(plan, info, srun_help=None, associations=None, user=""):
            seen.append(("the run", plan.cluster["name"], info))
            return []

        @staticmethod
        def check_stage(stage, cluster, info, reservations=None, user=""):
            seen.append((stage.name, cluster["name"], info))
            return [ConfigError("this scheduler refuses it", stage=stage.name,
                                key=f"pipeline.stages.{stage.name}.resources.nodes")] if stage.name == "reduce" else []

        @staticmethod
        def check_limits(plan, info, limits, queued=None):
            raise AssertionError("no `limits` was given: check_limits is not called")

    plan = _smoke("local")
    found = [(e.stage, e.key, e.message) for e in preflight(plan, tmp_path, None, backend=Refusing)]
    assert found == [("reduce", "pipeline.stages.reduce.resources.nodes", "this scheduler refuses it")]
    assert sorted(seen) == sorted((name, "local", None) for name in [*plan.stages, "the run"])


def test_a_local_run_is_not_checked_by_slurm(tmp_path, monkeypatch):
    """Even with cluster facts at hand, cluster=local checks its one machine, not partitions or limits."""
    from launcher.plan.preflight import preflight
    from launcher.slurm import checks as slurm_checks
    from launcher.slurm.facts import ClusterInfo
    from launcher.slurm.limits import AccountingLimits

    def slurm(*args, **kwargs):
        raise AssertionError("a Slurm check ran")

    for owner in (slurm_checks, backends.get("slurm")):
        monkeypatch.setattr(owner, "check_stage", slurm if owner is slurm_checks else staticmethod(slurm))
        monkeypatch.setattr(owner, "check_limits", slurm if owner is slurm_checks else staticmethod(slurm))
    info = ClusterInfo(max_array_size=1001, partitions={})
    found = [(e.stage, e.key, e.message) for e in preflight(
        _smoke("local", "pipeline.stages.reduce.resources.nodes=2"), tmp_path, info,
        reservations=slurm, limits=lambda user: AccountingLimits(), queued=slurm)]
    assert found == [("reduce", "pipeline.stages.reduce.resources.nodes",
                      "2 nodes requested; cluster=local is one machine")]
    with pytest.raises(AssertionError, match="a Slurm check ran"):  # the same plan on Slurm asks it
        preflight(_smoke("dev"), tmp_path, info, limits=lambda user: AccountingLimits())
