"""Slurm clients replaced by shell scripts for unit tests of launcher/slurm/client.py (test_ledger,
test_status): each call is appended to calls.log, so a test asserts on the calls made."""
import os
import stat

from launcher.slurm.client import Slurm


def fake_clients(tmp_path, monkeypatch, **scripts) -> Slurm:
    """Slurm clients replaced by shell scripts (name -> body); each call is appended to calls.log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in scripts.items():
        f = bin_dir / name
        f.write_text(f"#!/bin/bash\necho {name} \"$@\" >> {tmp_path}/calls.log\n{body}\n")
        f.chmod(f.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setattr("tenacity.nap.time.sleep", lambda s: None)  # no real backoff in a unit test
    return Slurm({"name": "fake"})


def calls(tmp_path):
    return (tmp_path / "calls.log").read_text().splitlines()
