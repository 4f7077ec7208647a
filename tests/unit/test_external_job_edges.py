"""A stage may wait on a Slurm job outside the run: `after: {job:12345: afterok}` (on the command line
`+pipeline.stages.S.after={job\\:12345: afterok}`). The plan keeps it out of the DAG, the dependency goes
to sbatch, and preflight asks Slurm that the job exists and can satisfy the edge. (On the dev cluster:
tests/integration/test_external_jobs.py.)"""
import os

import pytest

from launcher.run import ops
from launcher.config.compose import compose
from launcher.errors import ConfigErrors
from launcher.plan.model import build_plan
from launcher.plan.render import build_requests
from launcher.slurm.backend import SlurmBackend
from launcher.slurm.checks import check_external
from launcher.slurm.client import Slurm
from launcher.run.submit import dependency_string

WAIT = r"+pipeline.stages.reduce.after={job\:12345: afterok}"


def plan_of(*overrides, cluster="dev"):
    cfg = compose(["pipeline=smoke", f"cluster={cluster}", *overrides])
    return build_plan([cfg], [[]]), cfg


def test_the_job_is_kept_out_of_the_dag_and_passed_to_sbatch():
    plan, cfg = plan_of(WAIT)
    reduce = plan.stages["reduce"]
    assert reduce.external == {"12345": "afterok"} and [d.parent for d in reduce.deps] == ["shards"]
    assert cfg["pipeline"]["stages"]["reduce"]["after"] == {"shards": "afterok", "job:12345": "afterok"}  # as given
    assert reduce.hash != plan_of()[0].stages["reduce"].hash
    assert plan_of()[0].stages["shards"].hash == plan.stages["shards"].hash
    req = next(r for r in build_requests(plan, ops.all_tasks(plan), 1000) if r.stage == "reduce")
    assert dependency_string(req, plan, {("shards", 0): "101"}, {}) == "afterok:101,afterok:12345"


def test_a_stage_with_only_an_outside_job_waits_on_it_alone():
    plan, _ = plan_of(r"+pipeline.stages.shards.after={job\:7: afterany, job\:8: afterany}")
    req = next(r for r in build_requests(plan, {"shards": [0, 1]}, 1000) if r.stage == "shards")
    assert dependency_string(req, plan, {}, {}) == "afterany:7:8"


@pytest.mark.parametrize("override, cluster, needle", [
    (r"+pipeline.stages.reduce.after={job\:12a: afterok}", "dev", "a Slurm job id is digits"),
    (r"+pipeline.stages.reduce.after={job\:12: aftercorr}", "dev", "aftercorr pairs the tasks of two arrays"),
    (WAIT, "local", "runs no Slurm jobs"),
])
def test_refused_with_stage_and_key(override, cluster, needle):
    with pytest.raises(ConfigErrors) as e:
        plan_of(override, cluster=cluster)
    [err] = e.value.errors
    assert err.stage == "reduce" and err.key.startswith("pipeline.stages.reduce.after.job:") and needle in err.message


def test_a_sweep_may_not_change_it():
    cfgs = [compose(["pipeline=smoke", "cluster=dev", fr"+pipeline.stages.reduce.after={{job\:{j}: afterok}}"])
            for j in (1, 2)]
    with pytest.raises(ConfigErrors) as e:
        build_plan(cfgs, [["a"], ["b"]])
    assert any(x.key == "pipeline.stages.reduce.after" and "differs between sweep points" in x.message
               for x in e.value.errors)


@pytest.mark.parametrize("kind, words, held, error, met", [
    ("afterok", ["RUNNING"], True, None, False),
    ("afterok", ["COMPLETED"], True, None, False),             # Slurm still holds it: the edge goes to sbatch
    ("afterok", ["COMPLETED"], False, None, True),             # forgotten by slurmctld, held: not passed
    ("afterok", ["FAILED"], True, "can never hold", False),
    ("afterok", ["COMPLETED", "CANCELLED"], False, "can never hold", False),  # an array job, one task cancelled
    ("afternotok", ["COMPLETED"], True, "can never hold", False),
    ("afternotok", ["FAILED"], False, None, True),
    ("afterany", ["PENDING"], False, "no longer holds", False),
    ("after", ["RUNNING"], False, None, True),
])
def test_preflight_reads_the_jobs_state(kind, words, held, error, met):
    plan, _ = plan_of(fr"+pipeline.stages.reduce.after={{job\:12345: {kind}}}")
    errors, held_edges = check_external(plan, {"12345": (words, held)})
    assert [e.message for e in errors if error and error in e.message] or not error and not errors
    assert all(e.key == "pipeline.stages.reduce.after.job:12345" and e.stage == "reduce" for e in errors)
    assert bool(held_edges) is met


def test_an_unknown_job_is_refused():
    plan, _ = plan_of(WAIT)
    [e], _ = check_external(plan, {})
    assert "no Slurm job 12345: neither squeue nor sacct knows it" in e.message


def test_an_edge_that_holds_on_a_forgotten_job_is_not_passed(capsys):
    plan, _ = plan_of(WAIT)

    class Known(SlurmBackend):  # the Slurm backend's check_external over a canned squeue/sacct answer
        def __init__(self):
            pass

        def job_states(self, ids):
            assert set(ids) == {"12345"}
            return {"12345": (["COMPLETED"], False)}

    assert ops._external_jobs(plan, Known()) == [] and plan.stages["reduce"].external == {}
    assert "stage 'reduce': job 12345 ended COMPLETED and slurmctld no longer holds it" in capsys.readouterr().err


def test_job_states_asks_squeue_once_and_sacct_for_what_it_forgot(tmp_path, monkeypatch):
    (tmp_path / "squeue").write_text("#!/bin/sh\necho 'a site banner'\necho '12|RUNNING'\necho '13_[2-4]|PENDING'\n"
                                     "echo '13_1|RUNNING'\n")
    (tmp_path / "sacct").write_text("#!/bin/sh\necho \"$@\" > " + str(tmp_path / "sacct.args") +
                                    "\necho '14|CANCELLED by 0'\n")
    for f in ("squeue", "sacct"):
        (tmp_path / f).chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    slurm = Slurm({"backend": "slurm"})
    states = slurm.job_states(["12", "13", "14", "15"])
    assert states == {"12": (["RUNNING"], True), "13": (["PENDING", "RUNNING"], True), "14": (["CANCELLED"], False)}
    assert slurm.calls == {"squeue": 1, "sacct": 1} and "-j 14,15" in (tmp_path / "sacct.args").read_text()
