"""A task Slurm no longer knows is lost, not pending forever; a cluster without accounting still gives a
correct status (issue 15, fault 8).

A job id that neither sacct nor squeue knows cannot be made on demand (accounting purges take days):
these tests run a real pipeline on the dev cluster, then point a ledger record at an id the cluster never
issued (as after a purge or a lost record), with its submission time past the grace."""
import json
import random
import time

import pytest
from conftest import stage_counts

from jobs import layout

pytestmark = pytest.mark.slurm


def unknown_job_id(env) -> str:
    """An id this cluster never issued (its counter is far below; MaxJobId is 67043328)."""
    return str(random.randint(50_000_000, 60_000_000))


def rewrite_ledger(cli, stage: str, new_id: str) -> str:
    """Point the stage's sbatch record at `new_id`, submitted an hour ago; the old id."""
    path = cli.run_dir() / "submissions.jsonl"
    records = [json.loads(x) for x in path.read_text().splitlines()]
    rec = next(r for r in records if r.get("stage") == stage and "job_id" in r)
    old, rec["job_id"], rec["time"] = rec["job_id"], new_id, rec["time"] - 3600
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return old


def test_unknown_job_is_lost_and_resume_never_depends_on_it(dcli, dev_slurm):
    dcli("run", "pipeline=smoke", "cluster=dev", "pipeline.vars.fail_once_task=3")
    assert dcli.wait(timeout=180)["state"] == "FAILED"
    bogus = unknown_job_id(dev_slurm)
    rewrite_ledger(dcli, "shards", bogus)  # sacct and squeue do not know the shards job any more

    p = dcli("status", "latest", "--json", check=False)
    st = json.loads(p.stdout)
    assert st["state"] == "FAILED" and p.returncode == 1, st  # not pending (exit 2) forever
    counts = stage_counts(st)
    assert counts["shards"]["completed"] == 3 and counts["shards"].get("lost") == 1, st
    assert counts["reduce"]["cancelled"] == 1 and counts["fanout"]["completed"] == 2

    before = len(dcli.ledger())
    dcli("resume", "latest")
    new = dcli.ledger()[before:]
    assert [(r["stage"], r["tasks"]) for r in new] == [("shards", [3]), ("reduce", [0]), ("checkpointing", [0])]
    assert all(bogus not in (r["dependency"] or "") for r in new)
    assert new[1]["dependency"] == f"afterok:{new[0]['job_id']}"
    assert dcli.wait(timeout=180)["state"] == "COMPLETED"


def test_task_whose_job_was_purged_while_running_is_lost_not_running(dcli, dev_slurm):
    """A node crash (or SIGKILL) leaves the task's running marker; then the job is purged."""
    ck = "pipeline.stages.checkpointing.params"
    dcli("run", "pipeline=smoke", "cluster=dev", f"{ck}.force_requeue_at=null", f"{ck}.target=3")
    assert dcli.wait(timeout=180)["state"] == "COMPLETED"
    run_dir = dcli.run_dir()
    h = next(s["hash"] for s in json.loads((run_dir / "plan.json").read_text())["stages"] if s["name"] == "checkpointing")
    layout.marker_path(run_dir, "checkpointing", h, 0).unlink()
    bogus = unknown_job_id(dev_slurm)
    rewrite_ledger(dcli, "checkpointing", bogus)
    layout.marker_path(run_dir, "checkpointing", h, 0, f"running-{bogus}_0").touch()

    st = dcli.status()
    assert st["state"] == "FAILED" and stage_counts(st)["checkpointing"].get("lost") == 1, st  # not running forever
    before = len(dcli.ledger())
    dcli("resume", "latest")
    assert [(r["stage"], r["tasks"], r["dependency"]) for r in dcli.ledger()[before:]] == [("checkpointing", [0], None)]
    assert dcli.wait(timeout=180)["state"] == "COMPLETED"


def test_serve_side_wait_sees_a_purged_client_as_ended(tmp_path, dev_slurm, monkeypatch):
    """jobs.layout.task_ended (a server waiting for its clients) asks squeue; an id slurmctld does not
    know is not in the queue: ended, not 'ask again' forever."""
    monkeypatch.setenv("SLURM_CONF", dev_slurm["SLURM_CONF"])
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    bogus = unknown_job_id(dev_slurm)
    (run_dir / "submissions.jsonl").write_text(json.dumps(
        {"job_id": bogus, "stage": "client", "chunk": 0, "offset": 0, "tasks": [0], "time": time.time() - 3600}) + "\n")
    assert layout.task_ended(run_dir, "client", "h", 0, "slurm")


# ------------------------------------------------------------------ a cluster without accounting

@pytest.fixture
def nacli(tmp_path, dev_slurm_noacct):
    from conftest import CLI

    root = tmp_path / "runs"
    root.mkdir()
    return CLI(root, env=dev_slurm_noacct)


def test_status_without_accounting_comes_from_squeue_and_markers(nacli, dev_slurm_noacct, monkeypatch):
    nacli("run", "pipeline=smoke", "cluster=dev-noacct", "pipeline.vars.fail_once_task=2")
    p = nacli("status", "latest", check=False)
    assert p.returncode in (1, 2) and "accounting storage is disabled" not in p.stderr, p.stderr
    st = nacli.wait(timeout=180)
    counts = stage_counts(st)
    assert st["state"] == "FAILED" and nacli("status", "latest", check=False).returncode == 1
    assert counts["shards"]["failed"] == 1 and counts["shards"]["completed"] == 3
    assert counts["reduce"]["cancelled"] == 1 and counts["checkpointing"]["cancelled"] == 1
    assert counts["fanout"]["completed"] == 2

    # ONE scheduler query per status: squeue, and no sacct (run.json says the cluster has no accounting)
    assert json.loads((nacli.run_dir() / "run.json").read_text())["accounting"] is False
    from launcher.run import ops
    from launcher.run.rundir import Run

    monkeypatch.setenv("SLURM_CONF", dev_slurm_noacct["SLURM_CONF"])
    run = Run(nacli.run_dir())
    backend = ops.run_backend(run)
    from launcher.run.status import collect

    collect(run, backend)
    assert backend.calls == {"squeue": 1}

    before = len(nacli.ledger())
    nacli("resume", "latest")
    assert [(r["stage"], r["tasks"]) for r in nacli.ledger()[before:]] == [
        ("shards", [2]), ("reduce", [0]), ("checkpointing", [0])]
    assert nacli.wait(timeout=180)["state"] == "COMPLETED"


def test_no_accounting_cluster_is_not_asked_for_associations(nacli):
    """sacctmgr fails without accounting; slurmctld then takes any --qos/--account as it is."""
    p = nacli("plan", "pipeline=smoke", "cluster=dev-noacct", "cluster.qos=normal", check=False)
    assert p.returncode == 0 and "accounting_storage" not in p.stderr, p.stderr
