"""The login-node side must not import torch or a stage library, and must start fast."""
import json
import subprocess
import sys

HEAVY = ["torch", "transformers", "datatrove", "nanotron", "lighteval", "trl", "vllm", "accelerate", "numpy"]

PROBE = """
import sys, json
from launcher.cli import main
try:
    main({argv!r})
except SystemExit:
    pass
print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)), file=sys.stderr)
"""


def loaded(argv, tmp_path):
    p = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv, heavy=HEAVY)], capture_output=True, text=True,
                       cwd=tmp_path)
    return json.loads(p.stderr.strip().splitlines()[-1])


def test_help_imports_nothing_heavy(tmp_path):
    assert loaded(["--help"], tmp_path) == []


def test_plan_imports_nothing_heavy(tmp_path):
    assert loaded(["plan", "pipeline=smoke", "cluster=local", f"run_root={tmp_path}"], tmp_path) == []


def test_help_does_not_even_import_hydra(tmp_path):
    code = "import sys\nfrom launcher.cli import main\ntry: main(['--help'])\nexcept SystemExit: pass\n" \
           "print('hydra' in sys.modules, 'submitit' in sys.modules, file=sys.stderr)"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert p.stderr.strip().splitlines()[-1] == "False False"


def test_dashboard_help_imports_neither_its_extra_nor_anything_heavy(tmp_path):
    """The verb's parser is built at every start: Starlette and uvicorn are imported only to serve."""
    assert loaded(["dashboard", "--help"], tmp_path) == []
    code = "import sys\nfrom launcher.cli import main\ntry: main(['dashboard', '--help'])\nexcept SystemExit: pass\n" \
           "print(sorted(m for m in ('starlette', 'uvicorn', 'matplotlib') if m in sys.modules), file=sys.stderr)"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert p.stderr.strip().splitlines()[-1] == "[]"
