"""Every queued job is in the ledger, whatever a site's Slurm clients print (issue 15, fault 6).

Sites wrap sbatch, sacct, squeue, scontrol and sacctmgr (account balances, banners, notices). The
wrappers here print such lines around the real clients on the dev cluster. Listed case: an sbatch that
prints a notice line before its --parsable answer. Siblings: a notice after the answer (the job is found
by its script with one squeue call), an sbatch wrapper that queues the job and then fails (the job is
found, recorded and cancelled: no untracked job), banners around every other client."""
import time

import pytest
from conftest import queued, slurm
from ledger_helpers import path_with, wrap

pytestmark = pytest.mark.slurm

# A banner with the separators of the clients' own output in it (| and _): read as data, it breaks parsers.
BANNER = "*** lab_cluster | account balance: 1234.5 GPU_h | maintenance 2026-12-01 ***"


def run_ids(ledger):
    return [r["job_id"] for r in ledger if "job_id" in r]


def test_sbatch_notice_before_the_job_id_leaves_no_untracked_job(tmp_path, dcli, dev_slurm):
    bin_dir = tmp_path / "bin"
    wrap(bin_dir, "sbatch", before="Submitting to account lab (balance 1234.5 GPU-h)")
    dcli.env.update(path_with(bin_dir))
    p = dcli("run", "pipeline=smoke", "cluster=dev", check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    ids = run_ids(dcli.ledger())
    assert len(ids) == 4
    assert queued(dev_slurm, root=dcli.run_root) <= set(ids)  # nothing queued that the ledger misses
    assert dcli.wait(timeout=180)["state"] == "COMPLETED"


def test_banners_around_every_client_and_a_notice_after_the_job_id(tmp_path, dcli, dev_slurm):
    bin_dir = tmp_path / "bin"
    # sbatch's notice comes AFTER its answer: the last line is not the job id, so the launcher finds the
    # job by its script (one squeue call per sbatch here).
    wrap(bin_dir, "sbatch", after="Remaining balance: 1233.9 GPU-h")
    for client in ("sacct", "squeue", "scontrol", "sacctmgr"):
        wrap(bin_dir, client, before=BANNER, after=BANNER)
    dcli.env.update(path_with(bin_dir))
    p = dcli("run", "pipeline=smoke", "cluster=dev", "cluster.qos=normal", check=False)  # qos: sacctmgr is asked
    assert p.returncode == 0, p.stdout + p.stderr
    ledger = dcli.ledger()
    ids = run_ids(ledger)
    assert len(ids) == 4 and [r["stage"] for r in ledger] == ["shards", "reduce", "fanout", "checkpointing"]
    assert queued(dev_slurm, root=dcli.run_root) <= set(ids)
    st = dcli.wait(timeout=180)  # status reads sacct through its banner
    assert st["state"] == "COMPLETED", st
    assert all(s["tasks"]["completed"] == s["tasks"]["total"] for s in st["stages"])


def test_sbatch_wrapper_that_fails_after_queuing_leaves_no_untracked_job(tmp_path, dcli, dev_slurm):
    bin_dir = tmp_path / "bin"
    # The second call queues its job with the real sbatch, then the wrapper fails (a post-submit hook).
    body = (f'n=$(( $(cat {bin_dir}/n 2>/dev/null || echo 0) + 1 )); echo $n > {bin_dir}/n\n'
            f'if [ $n = 2 ]; then "$(command -v -p sbatch || echo /usr/bin/sbatch)" "$@"; '
            f'echo "sbatch-hook: could not update the project quota" >&2; exit 1; fi')
    wrap(bin_dir, "sbatch", body=body)
    dcli.env.update(path_with(bin_dir))
    p = dcli("run", "pipeline=smoke", "cluster=dev", check=False)
    assert p.returncode == 1 and "could not update the project quota" in p.stderr
    ledger = dcli.ledger()
    ids = run_ids(ledger)
    assert len(ids) == 2, ledger  # shards, and reduce: the job the failed call queued, found by its script
    assert ledger[-1]["rolled_back"] == ids and "queued by the failed sbatch call itself" in p.stderr
    # every job it queued was cancelled: none is left pending or running
    deadline = time.time() + 30
    while time.time() < deadline and queued(dev_slurm, root=dcli.run_root) & set(ids):
        time.sleep(0.5)
    out = slurm(dev_slurm, "squeue", "-h", "-t", "PD,R,CG", "-o", "%i", "-j", ",".join(ids))
    assert not out.split()
