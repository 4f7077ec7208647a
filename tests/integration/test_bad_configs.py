"""The bad-config corpus (tests/bad_configs/*.yaml) against the real dev cluster: each case fails at
`launcher run` with exit 1 (64, a usage error, where the case says `exit: 64`), names its stage and key, prints no Python traceback, queues nothing and
writes no run directory (and no secret of the case's environment lands anywhere under its run root).

All cases run in one worker process (bad_config_worker.py: `launcher.cli.main` in-process, one case
after another, each with its own run root and environment), so the corpus costs what the checks
cost, not a Python start and a Hydra import per case. BAD_CONFIGS_ISOLATED=1 runs one `launcher run`
process per case instead (slower; the way an operator runs it)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, CLI, queued

CORPUS = Path(__file__).resolve().parent.parent / "bad_configs"
CASES = sorted(CORPUS.glob("*.yaml"))
ISOLATED = os.environ.get("BAD_CONFIGS_ISOLATED") == "1"
TRACEBACK = "Traceback (most recent call last)"


def test_the_corpus_is_big_enough():
    assert len(CASES) >= 100


def _fill(text: str) -> str:
    return text.replace("{files}", str(CORPUS / "files"))


def load(case: Path) -> dict:
    """A case file: overrides (on `pipeline=<pipeline or smoke> cluster=dev`), env (variables of the
    submitting shell for this case), expect {stage, key, message[, exit]}."""
    spec = yaml.safe_load(case.read_text())
    spec["overrides"] = [_fill(o) for o in spec["overrides"]]
    spec["env"] = {k: _fill(str(v)) for k, v in (spec.get("env") or {}).items()}
    return spec


def argv(spec: dict, run_root: Path) -> list:
    own_root = any(o.startswith("run_root=") for o in spec["overrides"])  # a case about run_root itself
    return ["run", f"pipeline={spec.get('pipeline', 'smoke')}", "cluster=dev", *spec["overrides"],
            *([] if own_root else [f"run_root={run_root}"])]


@pytest.fixture(scope="session")
def corpus_results(dev_slurm, tmp_path_factory) -> dict:
    """Every case, run once in the worker: {case name: result}."""
    if ISOLATED:
        return {}
    base = tmp_path_factory.mktemp("bad-configs")
    batch = []
    for case in CASES:
        root = base / case.stem
        root.mkdir()
        spec = load(case)
        batch.append({"id": case.stem, "argv": argv(spec, root), "run_root": str(root),
                      "env": {**dev_slurm, "LAUNCHER_RUN_ROOT": str(root), **spec["env"]}})
    p = subprocess.run([sys.executable, str(Path(__file__).with_name("bad_config_worker.py"))],
                       input=json.dumps(batch), capture_output=True, text=True, cwd=ROOT, timeout=3600)
    results = {r["id"]: r for r in map(json.loads, filter(None, p.stdout.splitlines()))}
    for case in batch:
        results.get(case["id"], {})["run_root"] = case["run_root"]
    assert p.returncode == 0 and len(results) == len(batch), f"worker exited {p.returncode}:\n{p.stderr[-5000:]}"
    slowest = sorted(results.values(), key=lambda r: -r["seconds"])[:5]
    print(f"\n{len(results)} bad configs in {sum(r['seconds'] for r in results.values()):.1f} s; slowest: "
          + ", ".join(f"{r['id']} {r['seconds']:.1f} s" for r in slowest))
    return results


@pytest.mark.slurm
@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_bad_config_fails_before_anything_is_queued(request, dev_slurm, tmp_path, case):
    spec = load(case)
    exp = spec["expect"]
    if ISOLATED:
        root = tmp_path / "runs"
        root.mkdir()
        cli = CLI(root, env={**dev_slurm, **spec["env"]})
        p = cli(*argv(spec, root), check=False)
        rc, err, jobs = p.returncode, p.stderr, queued(dev_slurm, root=root)
    else:
        r = request.getfixturevalue("corpus_results")[case.stem]
        rc, err, jobs, root = r["rc"], r["stderr"], set(r["queued"]), Path(r["run_root"])
    assert rc == exp.get("exit", 1), f"{case.stem}: exit {rc}\n{err}"  # 64: an override that does not parse
    assert TRACEBACK not in err, f"{case.stem}: a Python traceback instead of an error:\n{err}"
    where = f"stage '{exp['stage']}': " if exp["stage"] else ""
    if exp["key"].startswith("."):  # only the key's end is fixed (a cycle may be reported at any member)
        assert exp["key"] + ":" in err and "stage '" in err, err
    else:
        assert f"{where}{exp['key']}:" in err, err
    assert exp["message"] in err, err
    assert jobs == set()
    assert not any(root.glob("**/run.json")), f"{case.stem}: a run directory was written"
    for name, value in spec["env"].items():  # a secret of the shell is in no file under the run root
        if len(value) >= 8:
            found = subprocess.run(["grep", "-rl", "--", value, str(root)], capture_output=True, text=True)
            assert found.stdout == "", f"{case.stem}: the value of {name} is in {found.stdout}"


def test_plan_with_an_unwritable_run_root_is_an_error_not_a_traceback(cli):
    """`launcher plan` writes its scripts even when preflight finds problems, except where it cannot."""
    p = cli("plan", "pipeline=smoke", "cluster=local", "run_root=/proc/launcher-bad-config", check=False)
    assert p.returncode == 1 and "run_root: run root /proc/launcher-bad-config is not writable" in p.stderr, p.stderr
    assert TRACEBACK not in p.stderr
