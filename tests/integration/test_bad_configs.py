"""The bad-config corpus (tests/bad_configs/*.yaml) against the real dev cluster: each case fails at
`launcher run`, names its stage and key, queues nothing and writes no run directory."""
from pathlib import Path

import pytest
import yaml
from conftest import queued

CORPUS = Path(__file__).resolve().parent.parent / "bad_configs"
CASES = sorted(CORPUS.glob("*.yaml"))


def test_the_corpus_is_big_enough():
    assert len(CASES) >= 30


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_bad_config_fails_before_anything_is_queued(dcli, dev_slurm, case):
    spec = yaml.safe_load(case.read_text())
    exp = spec["expect"]
    overrides = [o.replace("{files}", str(CORPUS / "files")) for o in spec["overrides"]]
    p = dcli("run", f"pipeline={spec.get('pipeline', 'smoke')}", "cluster=dev", *overrides, check=False)
    assert p.returncode == 1, f"{case.stem}: exit {p.returncode}\n{p.stdout}\n{p.stderr}"
    err = p.stderr
    where = f"stage '{exp['stage']}': " if exp["stage"] else ""
    if exp["key"].startswith("."):  # only the key's end is fixed (a cycle may be reported at any member)
        assert exp["key"] + ":" in err and "stage '" in err, err
    else:
        assert f"{where}{exp['key']}:" in err, err
    assert exp["message"] in err, err
    assert queued(dev_slurm, root=dcli.run_root) == set()
    assert not any(dcli.run_root.glob("*/run.json"))
