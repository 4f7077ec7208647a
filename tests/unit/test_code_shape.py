"""The shape the code keeps (issue 17): no function longer than MAX_LINES, no stage kind's name tested
outside the kinds' own modules, runtime leaves that import no kind or adapter, and a node registry that
knows every kind of the schema. AST-based: comments and docstrings move nothing."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAX_LINES = 80
# Folders whose functions are held to MAX_LINES.
CHECKED = ["jobs", "launcher", "hydra_plugins"]


def python_files(*folders: str):
    for folder in folders:
        yield from sorted((ROOT / folder).rglob("*.py"))


def functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def long_functions(folders, limit: int = MAX_LINES) -> list[str]:
    """'path:line name (N lines)' of every function (nested ones too) longer than `limit` lines, its
    decorators and docstring included."""
    out = []
    for path in python_files(*folders):
        for fn in functions(ast.parse(path.read_text(), str(path))):
            first = min([fn.lineno] + [d.lineno for d in fn.decorator_list])
            n = fn.end_lineno - first + 1
            if n > limit:
                out.append(f"{path.relative_to(ROOT)}:{fn.lineno} {fn.name} ({n} lines)")
    return out


def test_no_function_is_longer_than_80_lines():
    assert long_functions(CHECKED) == []


def test_the_length_check_sees_a_long_function(tmp_path, monkeypatch):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.py").write_text(f"def short():\n    return 1\n\n\ndef long():\n{body}\n")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    assert long_functions(["pkg"]) == ["pkg/m.py:5 long (81 lines)"]


# -- stage kinds are named only in their own modules ------------------------------------------------
def kind_names() -> set[str]:
    from jobs import kinds
    from launcher import kinds as login_kinds

    return set(login_kinds.names()) | kinds.names()


def _is_kind_expr(node: ast.AST) -> bool:
    """`kind`, `parent_kind`, `x.kind`, `x["kind"]`, `x.get("kind")`: an expression that holds a stage kind."""
    def named(name: str) -> bool:
        return name == "kind" or name.endswith("_kind")

    if isinstance(node, ast.Name):
        return named(node.id)
    if isinstance(node, ast.Attribute):
        return named(node.attr)
    if isinstance(node, ast.Subscript):
        return isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str) and named(node.slice.value)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" and node.args:
        first = node.args[0]
        return isinstance(first, ast.Constant) and isinstance(first.value, str) and named(first.value)
    return False


def _strings(node: ast.AST, constants: dict) -> set[str]:
    """The strings a node names: a string, a tuple/list/set of them, a dict's keys, or a module-level
    constant bound to one of those."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return set().union(*(_strings(e, constants) for e in node.elts)) if node.elts else set()
    if isinstance(node, ast.Dict):
        return set().union(*(_strings(k, constants) for k in node.keys if k is not None)) if node.keys else set()
    if isinstance(node, ast.Name):
        return constants.get(node.id, set())
    return set()


def kind_tests(source: str, names: set[str], where: str = "") -> list[str]:
    """'where:line code' of every comparison of a kind expression with a stage kind's name, and every
    lookup of a kind in a table keyed by kind names."""
    tree = ast.parse(source)
    constants: dict = {}
    for node in tree.body:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    constants[target.id] = _strings(node.value, {})
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(map(_is_kind_expr, operands)) and any(_strings(o, constants) & names for o in operands):
                found.append(f"{where}:{node.lineno} {ast.unparse(node)}")
        elif isinstance(node, ast.Subscript) and _is_kind_expr(node.slice) and _strings(node.value, constants) & names:
            found.append(f"{where}:{node.lineno} {ast.unparse(node)}")
    return found


@pytest.mark.parametrize("side", ["jobs", "launcher"])
def test_no_code_outside_the_kinds_tests_a_kind_name(side):
    """What a kind does is decided by its Kind (launcher/kinds) or its runner (jobs/kinds): outside
    those packages no code compares a stage kind's name (Slurm dependency kinds, trainers, evaluation
    task kinds are other kinds and pass)."""
    names = kind_names()
    found = [hit for path in python_files(side) if "kinds" not in path.relative_to(ROOT / side).parts
             for hit in kind_tests(path.read_text(), names, str(path.relative_to(ROOT)))]
    assert found == []


@pytest.mark.parametrize("code", [
    'if spec["kind"] == "serve": pass',
    'x = kind in ("fetch", "publish")',
    'x = st.get("kind") != "serve"',
    'x = "serve" == self.parent_kind',
    'KINDS = ("preprocess", "minhash")\nx = st.get("kind") in KINDS',
    'TABLE = {"command": 1, "python": 2}\nx = TABLE[spec["kind"]]',
])
def test_the_kind_name_check_finds_each_form(code):
    assert len(kind_tests(code, kind_names())) == 1


def test_the_kind_name_check_leaves_other_kinds_alone():
    """An align trainer ('sft') or an evaluation task's kind is not a stage kind."""
    code = ('TRAINERS = {"sft": 1, "dpo": 2}\nx = TRAINERS[kind]\ny = kind == "sft"\nz = t["kind"] == "perplexity"\n'
            'w = spec["backend"] == "local"')
    assert kind_tests(code, kind_names()) == []


# -- imports ---------------------------------------------------------------------------------------
def imported(path: Path) -> set[str]:
    """Every module a file imports (at any depth: top level and inside functions), absolute names."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return out


def test_runtime_leaves_import_no_kind_and_no_adapter():
    """jobs/runtime/ imports of the project only layout, context and other runtime leaves."""
    allowed = ("jobs.runtime", "jobs.layout", "jobs.context")
    bad = {f"{p.relative_to(ROOT)}: {m}" for p in python_files("jobs/runtime") for m in imported(p)
           if (m == "jobs" or m.startswith("jobs.")) and not m.startswith(allowed) and m != "jobs"}
    bad |= {f"{p.relative_to(ROOT)}: {m}" for p in python_files("jobs/runtime") for m in imported(p)
            if m.startswith(("launcher", "jobs.kinds", "jobs.adapters", "jobs.task", "jobs.demo"))}
    assert sorted(bad) == []


def test_kinds_are_independent_and_nothing_imports_the_entry_point_back():
    """A kind module imports no other kind (jobs.kinds.base aside); no module of jobs/ imports jobs.task
    (the entry point imports them: the cycle task <-> kinds is gone)."""
    kinds = {p.stem for p in python_files("jobs/kinds")} - {"__init__", "base"}
    bad = []
    for p in python_files("jobs/kinds"):
        bad += [f"{p.name}: {m}" for m in imported(p)
                if m.startswith("jobs.kinds.") and m.split(".")[2] in kinds - {p.stem}]
    for p in python_files("jobs"):
        if p.name != "__main__.py":
            bad += [f"{p.relative_to(ROOT)}: {m}" for m in imported(p) if m == "jobs.task" or m.startswith("jobs.task.")]
    assert bad == []


def test_importing_the_entry_point_and_the_runtime_loads_no_kind_and_no_stage_library():
    import subprocess
    import sys

    code = ("import sys, jobs.task, jobs.layout, jobs.kinds\n"
            "import jobs.runtime.allocation, jobs.runtime.endpoints, jobs.runtime.http, jobs.runtime.jsonl, "
            "jobs.runtime.log, jobs.runtime.polling, jobs.runtime.ports, jobs.runtime.processes\n"
            "print(sorted(m for m in sys.modules if m.startswith('jobs.kinds.') or m.split('.')[0] in "
            "('torch', 'transformers', 'datatrove', 'trl', 'lighteval', 'vllm', 'huggingface_hub')))")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"


def test_no_import_cycle_in_launcher_or_jobs():
    """No module of launcher/ or jobs/ imports (directly or through others, lazy imports inside
    functions included) a module that imports it back. grimp is import-linter's graph library."""
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("launcher", "jobs")
    ours = {m for m in graph.modules if m.split(".")[0] in ("launcher", "jobs")}
    cycles = sorted({tuple(sorted((a, b))) for a in ours for b in graph.find_modules_directly_imported_by(a)
                     if b in ours and b != a and graph.chain_exists(importer=b, imported=a)})
    assert cycles == []


def test_test_file_basenames_are_unique():
    """tests/ has no __init__.py files: two test files with one basename (tests/unit/x.py and
    tests/integration/x.py) make the whole-suite collection fail with "import file mismatch", which
    neither tier alone shows (it happened twice)."""
    from collections import Counter
    from pathlib import Path

    names = Counter(p.name for p in (Path(__file__).resolve().parents[1]).rglob("test_*.py"))
    assert [n for n, c in names.items() if c > 1] == []
