"""Sweeps and overrides as `launcher plan` writes them for the real dev cluster: each sweep point's
config (config/point-N.json) and stage payloads (spec.json, what the tasks read) are what Hydra's own
multirun composes for that point; `+`/`++` keys meet the typed schema. (Composition in detail:
tests/unit/test_compose.py; refused overrides: tests/bad_configs/override_*, sweep_*.)"""
import json
import shutil
from pathlib import Path

import pytest
from conftest import CLI, ROOT, queued

from jobs import point_configs

pytestmark = pytest.mark.slurm


def planned(cli: CLI, *overrides: str) -> Path:
    cli.run_root.mkdir(exist_ok=True)
    cli("plan", *overrides)
    (plan_dir,) = cli.run_root.glob("plans/*")
    return plan_dir


def point(plan_dir: Path, i: int) -> dict:
    return point_configs.read(plan_dir, i)


def payloads(plan_dir: Path, stage: str) -> list:
    return json.loads((plan_dir / "stages" / stage / "spec.json").read_text())["payloads"]


def test_a_mapping_sweep_gives_each_point_its_own_mapping(dcli, dev_slurm):
    # issue 16 kind 5: point 1 kept point 0's target (one config object was reused for every point)
    d = planned(dcli, "-m", "pipeline=smoke", "cluster=dev", "pipeline.stages.checkpointing.params={target: 5},{step_s: 0.1}")
    want = [{"target": 5, "step_s": 0.05, "force_requeue_at": 8}, {"target": 20, "step_s": 0.1, "force_requeue_at": 8}]
    assert [point(d, i)["pipeline"]["stages"]["checkpointing"]["params"] for i in (0, 1)] == want
    assert [p["params"] for p in payloads(d, "checkpointing")] == want
    assert queued(dev_slurm, root=dcli.run_root) == set()


def test_quoted_sweep_values_reach_the_config_and_the_command_unquoted(dcli):
    # issue 15 fault 3: the value was stored as QuotedString(text='a,b', quote=...)
    d = planned(dcli, "-m", "pipeline=smoke", "cluster=dev", 'pipeline.description="a,b",c')
    assert [point(d, i)["pipeline"]["description"] for i in (0, 1)] == ["a,b", "c"]
    # a command built from quoted values (with a space and an `=`), as the task will run it
    d2 = planned(CLI(dcli.run_root / "2", dcli.env), "-m", "pipeline=smoke", "cluster=dev",
                 "+pipeline.vars.word=\"x=1\",'a b'",
                 "pipeline.stages.fanout.command='echo \"${pipeline.vars.word}\" > $LAUNCHER_OUTPUT_DIR/seen.txt'")
    assert [p["command"] for p in payloads(d2, "fanout")] == [
        'echo "x=1" > $LAUNCHER_OUTPUT_DIR/seen.txt', 'echo "a b" > $LAUNCHER_OUTPUT_DIR/seen.txt']
    assert "Quote" not in (d2 / "stages" / "fanout" / "spec.json").read_text()


def test_a_glob_sweep_runs_each_option_of_the_group(dcli):
    # issue 15 fault 4: `data=glob(*)` failed with "ConfigLoader is not set"
    recipes = sorted(p.stem for p in (ROOT / "conf" / "data").glob("*.yaml"))  # every option of the group
    assert len(recipes) >= 2
    d = planned(dcli, "-m", "pipeline=smoke", "cluster=dev", "data=glob(*)")
    assert [point(d, i)["data"]["recipe"] for i in range(len(recipes))] == recipes
    assert json.loads((d / "run.json").read_text())["points"] == [
        ["pipeline=smoke", "cluster=dev", f"data={r}", f"run_root={dcli.run_root}"] for r in recipes]
    others = ",".join(r for r in recipes if r != "fineweb_like")
    d2 = planned(CLI(dcli.run_root / "2", dcli.env), "-m", "pipeline=smoke", "cluster=dev",
                 f"data=glob(*,exclude=[{others}])", "pipeline.vars.scale=1,2")
    assert [point(d2, i)["data"]["recipe"] for i in (0, 1)] == ["fineweb_like", "fineweb_like"]


def test_force_add_of_a_schema_field_reaches_the_sbatch_script(dcli):
    # the right key with `++` (or `+` where the field is null) is applied like a YAML key: a GPU line, a new hash
    plain = planned(dcli, "pipeline=smoke", "cluster=dev")
    gpus = planned(CLI(dcli.run_root / "2", dcli.env), "pipeline=smoke", "cluster=dev",
                   "++pipeline.stages.shards.resources.gpus_per_node=1", "+pipeline.stages.shards.resources.qos=normal")
    script = (gpus / "stages" / "shards" / "scripts" / "s0-0.sbatch").read_text()
    assert "--gpus-per-node=1" in script or "--gres=gpu:1" in script, script
    assert "--qos=normal" in script
    hashes = [json.loads((d / "stages" / "shards" / "spec.json").read_text())["hash"] for d in (plain, gpus)]
    assert hashes[0] != hashes[1]


def test_an_unknown_yaml_key_names_the_closest_field(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf)
    smoke = conf / "pipeline" / "smoke.yaml"
    smoke.write_text(smoke.read_text().replace("resources: {time: \"00:05:00\"}\n    command: |\n      if",
                                               "resources: {time: \"00:05:00\", gpus_per_nodes: 1}\n    command: |\n      if"))
    (conf / "model" / "typo.yaml").write_text((conf / "model" / "tiny.yaml").read_text() + "\nhiden_size: 8\n")
    root = tmp_path / "runs"
    root.mkdir()
    cli = CLI(root, env={"LAUNCHER_CONF_DIR": str(conf)})
    p = cli("plan", "pipeline=smoke", "cluster=local", check=False)
    assert p.returncode == 1
    assert ("stage 'shards': pipeline.stages.shards.resources.gpus_per_nodes: In 'pipeline/smoke': Key 'gpus_per_nodes' "
            "not in 'Resources'; did you mean 'gpus_per_node'?") in p.stderr
    p = cli("plan", "pipeline=train", "model=typo", "cluster=local", check=False)
    assert p.returncode == 1 and "model.hiden_size: In 'model/typo': " in p.stderr
    assert "did you mean 'hidden_size'?" in p.stderr and "Traceback" not in p.stderr
    assert not list(root.glob("plans/*"))


def test_a_sweep_of_resources_runs_one_array_job_per_resource_set(dcli, dev_slurm):
    """issue 18 item 2: points with other resources (here reduce's time limit) get their own array job;
    the aftercorr child (checkpointing) is cut alike; the run completes and Slurm holds the limits."""
    import subprocess
    # a time limit is not in the content key (docs/content-keys.md): cache=false keeps the three points
    # of reduce and checkpointing from sharing one task (shards' points do share theirs)
    dcli("run", "-m", "pipeline=smoke", "cluster=dev", "pipeline.stages.reduce.resources.time=00:05:00,00:07:00,00:05:00",
         "pipeline.stages.reduce.cache=false", "pipeline.stages.checkpointing.cache=false")
    st = dcli.wait(timeout=300)
    assert st["state"] == "COMPLETED", st
    jobs = {}
    for rec in dcli.ledger():
        if "job_id" in rec:
            jobs.setdefault(rec["stage"], []).append((rec["job_id"], rec["tasks"]))
    assert sorted(t for _, t in jobs["reduce"]) == [[0, 2], [1]] and len(jobs["checkpointing"]) == 2
    assert jobs["shards"] == [(jobs["shards"][0][0], [0, 1, 2, 3])]  # one array job, its points shared
    limits = {}
    for job, tasks in jobs["reduce"]:
        out = subprocess.run(["sacct", "-X", "-n", "-P", "-j", job, "-o", "Timelimit"], env={**dcli.env},
                             capture_output=True, text=True, check=True).stdout.split()
        limits[tuple(tasks)] = set(out)
    assert limits == {(0, 2): {"00:05:00"}, (1,): {"00:07:00"}}, limits


def test_independent_points_keep_running_when_one_point_fails(dcli, dev_slurm):
    """issue 18 item 2, sweep.independent: point 0's failing shard cancels only point 0's reducer and
    its children; point 1 completes; resume finishes point 0 alone."""
    from conftest import stage_counts
    dcli("run", "-m", "pipeline=smoke", "cluster=dev", "sweep.independent=true", "pipeline.vars.fail_once_task=1,-1")
    st = dcli.wait(timeout=300)
    counts = stage_counts(st)
    assert st["state"] == "FAILED", st
    assert counts["shards"]["failed"] == 1 and counts["reduce"] == {**counts["reduce"], "completed": 1, "cancelled": 1}
    assert counts["checkpointing"]["completed"] == 1 and counts["checkpointing"]["cancelled"] == 1
    before = len(dcli.ledger())
    dcli("resume", "latest")
    assert [(r["stage"], r["tasks"]) for r in dcli.ledger()[before:]] == [("shards", [1]), ("reduce", [0]),
                                                                         ("checkpointing", [0])]
    assert dcli.wait(timeout=300)["state"] == "COMPLETED"
