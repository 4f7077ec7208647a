"""SlurmBackend.prefetch: preflight's Slurm queries asked in a thread while the plan is built. The calls are
the ones preflight makes anyway, each made once, and an error is raised where the answer is read."""
import pytest

from fake_slurm import calls
from launcher.slurm.client import SlurmCommandError
from launcher.slurm.backend import SlurmBackend
from launcher.slurm.client import QUERY_ATTEMPTS
from test_slurm_and_preflight import CONFIG, NODES, PARTITIONS


def fake(tmp_path, monkeypatch, scontrol: str, accounting: str = "accounting_storage/slurmdbd") -> SlurmBackend:
    import os
    import stat

    (tmp_path / "config.txt").write_text(CONFIG + f"AccountingStorageType   = {accounting}\n")
    (tmp_path / "partition.txt").write_text(PARTITIONS)
    (tmp_path / "node.txt").write_text(NODES)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in {"scontrol": scontrol, "sacctmgr": "true"}.items():
        f = bin_dir / name
        f.write_text(f"#!/bin/bash\necho {name} \"$@\" >> {tmp_path}/calls.log\n{body}\n")
        f.chmod(f.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setattr("tenacity.nap.time.sleep", lambda s: None)
    return SlurmBackend({"name": "fake"})


ANSWERS = 'case "$*" in "show config") cat {d}/config.txt;; *partition) cat {d}/partition.txt;; *node) cat {d}/node.txt;; esac'


def test_prefetched_answers_are_the_facts_and_limits_preflight_reads_each_asked_once(tmp_path, monkeypatch):
    import getpass

    backend = fake(tmp_path, monkeypatch, ANSWERS.format(d=tmp_path))
    backend.prefetch()
    facts = backend.facts()
    assert facts.info.max_array_size == 1001 and facts.accounting is True
    backend.checks(facts)["limits"](getpass.getuser())
    made = [c.split()[0] for c in calls(tmp_path)]
    assert made.count("scontrol") == 3 and made.count("sacctmgr") == 2, made


def test_without_accounting_the_limits_are_not_asked(tmp_path, monkeypatch):
    backend = fake(tmp_path, monkeypatch, ANSWERS.format(d=tmp_path), accounting="accounting_storage/none")
    backend.prefetch()
    assert backend.facts().accounting is False
    assert [c.split()[0] for c in calls(tmp_path)] == ["scontrol"] * 3


def test_a_failed_query_is_raised_by_facts_once_after_its_retries(tmp_path, monkeypatch):
    backend = fake(tmp_path, monkeypatch, 'echo "slurm_load_ctl_conf error: Unable to contact slurm controller" >&2; exit 1')
    backend.prefetch()
    with pytest.raises(SlurmCommandError, match="Unable to contact"):
        backend.facts()
    assert [c.split()[0] for c in calls(tmp_path)] == ["scontrol"] * QUERY_ATTEMPTS  # not asked again


def test_the_profile_named_on_the_command_line_is_asked_before_composing(tmp_path, monkeypatch):
    """ops._early_backend: `cluster=dev` is read from its file (slurm_conf resolved alone) and its queries
    start while Hydra composes; prepare_configs takes that backend when the composed profile agrees, so
    preflight's queries are made once."""
    import getpass

    from launcher.config.compose import compose
    from launcher.run import ops

    fake(tmp_path, monkeypatch, ANSWERS.format(d=tmp_path))
    guess, backend = ops._early_backend(["cluster=dev", "pipeline=smoke"])
    composed = compose(["cluster=dev", "pipeline=smoke"])["cluster"]
    assert guess == {"backend": composed["backend"], "slurm_conf": composed["slurm_conf"]}
    assert backend.facts().info.max_array_size == 1001
    backend.checks(backend.facts())["limits"](getpass.getuser())
    assert [c.split()[0] for c in calls(tmp_path)].count("scontrol") == 3
    for overrides in (["cluster=dev", "cluster.slurm_conf=/etc/other.conf"], ["pipeline=smoke"],
                      ["cluster=dev,dev-mn"], ["cluster=dev", "cluster.backend=local"], ["cluster=nope"]):
        assert ops._early_backend(overrides) is None, overrides
    assert ops._early_backend(["cluster=local"]) is None  # nothing to ask early
