"""Training stages on the real dev Slurm: torchrun under srun (kind=torchrun, the launch path of
nanotron), and a small-model ablation campaign with the hf backend: one array job per stage over
the sweep, checkpoints at a fixed token interval, and a run killed by its time limit that resumes
and ends exactly where an uninterrupted run with the same seed ends."""
from __future__ import annotations

import json

import pytest

from jobs import layout
from jobs.demo.corpus import make_corpus

from conftest import CLI, job_of, slurm

pytestmark = pytest.mark.slow


def test_torchrun_ranks_meet_at_the_first_nodes_rendezvous(dcli, dev_slurm, cpu_python):
    # two of the dev node's fake GPUs: torchrun starts one process per GPU (nproc_per_node unset)
    dcli("run", "pipeline=distributed", "cluster=dev", "pipeline.vars.nproc_per_node=null",
         "pipeline.stages.probe.resources.gpus_per_node=2")
    st = dcli.wait(timeout=300, poll=1)
    assert st["state"] == "COMPLETED", st
    out = layout.output_dir(dcli.run_dir(), "probe", 0, 0)
    ranks = [json.loads(p.read_text()) for p in sorted(out.glob("rank-*.json"))]
    assert sorted(r["rank"] for r in ranks) == [0, 1]
    assert {r["world_size"] for r in ranks} == {2} and {r["all_reduce"] for r in ranks} == {2.0}
    assert len({(r["master_addr"], r["master_port"]) for r in ranks}) == 1
    job = next(r["job_id"] for r in dcli.ledger() if "job_id" in r)
    log = "".join(p.read_text() for p in (dcli.run_dir() / "stages" / "probe" / "logs").glob("*.err"))
    node = slurm(dev_slurm, "scontrol", "show", "hostnames", "localhost").split()[0]
    # the first node of the allocation, and the per-job port (base 20000 + job id % 10000)
    assert f"--rdzv-endpoint={node}:{20000 + int(job) % 10000}" in log, log[-2000:]


def test_a_dying_rank_fails_the_task_with_a_failure_marker(dcli, cpu_python):
    dcli("run", "pipeline=distributed", "cluster=dev", "+pipeline.stages.probe.env.PROBE_FAIL_RANK=1")
    st = dcli.wait(timeout=300, poll=1)
    assert st["state"] == "FAILED", st
    plan = json.loads((dcli.run_dir() / "plan.json").read_text())
    failed = layout.marker_path(dcli.run_dir(), "probe", plan["stages"][0]["hash"], 0, "failed")
    assert "torchrun exited with status" in json.loads(failed.read_text())["error"]


# -- the ablation campaign (hf backend) -------------------------------------------------------------

STEPS, EVERY = 576, 144  # 1,024 tokens per step (micro_batch 8 x seq_len 128): long enough (~90 s alone)
# that a run with a one-minute time limit is stopped at least once


def small(corpus) -> list:
    return [f"data.source={corpus}", "data.tasks=1", "data.minhash.num_buckets=2",
            f"pipeline.vars.tokens={STEPS * 1024}", f"pipeline.vars.checkpoint_every_tokens={EVERY * 1024}"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    make_corpus(out, docs=600, shards=2, seed=0)
    return out


@pytest.fixture(scope="module")
def campaign(tmp_path_factory, dev_slurm, cpu_python, corpus):
    """-m data=fineweb_like,raw seed=1,2: four tiny models, one array job per stage."""
    dcli = CLI(tmp_path_factory.mktemp("runs"), env=dev_slurm)
    dcli("run", "-m", "pipeline=ablation", "data=fineweb_like,raw", "seed=1,2", "cluster=dev", "campaign=abl-test",
         *small(corpus), timeout=600)
    st = dcli.wait(timeout=1800, poll=5)
    assert st["state"] == "COMPLETED", st
    return dcli


def results(dcli, run="latest") -> list:
    out = dcli.run_dir(run) / "stages" / "train" / "out"
    return [json.loads((out / str(p) / "0" / "result.json").read_text()) for p in range(len(list(out.iterdir())))]


@pytest.mark.extended  # ~11 min for the campaign; the CI tier trains through test_evaluation's campaign and test_train_hf
def test_a_campaign_is_one_array_job_per_stage(campaign, dev_slurm):
    sbatch = [r for r in campaign.ledger() if "job_id" in r]
    assert len([r for r in sbatch if r["stage"] == "train"]) == 1
    job = next(r["job_id"] for r in sbatch if r["stage"] == "train")
    out = slurm(dev_slurm, "sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", job)
    tasks = {line.split("|")[0]: line.split("|")[1] for line in out.splitlines()}
    assert tasks == {f"{job}_{i}": "COMPLETED" for i in range(4)}, tasks
    plan = json.loads((campaign.run_dir() / "plan.json").read_text())
    train = next(s for s in plan["stages"] if s["name"] == "train")
    # the data stages' points are shared (one per variant, the tokenizer one for all): a training waits on
    # the whole parent arrays (launcher/plan/keys.py), not on the parent task of its own index
    assert {d["parent"]: (d["kind"], d["note"]) for d in train["deps"]} == \
        {"merge": ("afterok", "shared"), "tokenizer": ("afterok", "shared")}
    runs = results(campaign)
    assert {r["campaign"] for r in runs} == {"abl-test"}
    assert json.loads((campaign.run_dir() / "run.json").read_text())["campaign"] == "abl-test"
    variants = [(next(o for o in r["overrides"] if o.startswith("data=")), r["seed"]) for r in runs]
    assert variants == [("data=fineweb_like", 1), ("data=fineweb_like", 2), ("data=raw", 1), ("data=raw", 2)]


@pytest.mark.extended  # ~11 min for the campaign; the CI tier trains through test_evaluation's campaign and test_train_hf
def test_the_data_stages_run_once_per_variant_and_every_training_reads_its_variant(campaign, dev_slurm):
    """Issue 20, item 2: sacct shows the data stages with tasks for 2 distinct keys (data variants), not 4
    (points), the tokenizer with 1; the 4 trainings read their variant's merged data."""
    run = campaign.run_dir()
    plan = {s["name"]: s for s in json.loads((run / "plan.json").read_text())["stages"]}
    data_stages = ["clean", "dedup.signatures", "dedup.buckets", "dedup.clusters", "dedup.filter", "tokenize", "merge"]
    for name in data_stages + ["tokenizer"]:
        job = job_of(campaign, name)
        out = slurm(dev_slurm, "sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", job)
        tasks = [line.split("|") for line in out.splitlines() if line.strip()]
        distinct = 1 if name == "tokenizer" else 2
        assert len(tasks) == distinct * plan[name]["tasks_per_point"], (name, tasks)
        assert all(state == "COMPLETED" for _, state in tasks), (name, tasks)
        assert len(set(plan[name]["keys"])) == distinct and plan[name]["shared"] == \
            ([0, 0, 0, 0] if name == "tokenizer" else [0, 0, 2, 2])
    spec = json.loads((layout.stage_dir(run, "train") / "spec.json").read_text())
    merged = {p: layout.Folders(spec, p).of("merge", "output") for p in range(4)}
    assert merged[0] == merged[1] != merged[2] == merged[3]
    assert all(list(folder.glob("*.ds")) for folder in merged.values())
    # the variant a training was given is its own point's
    variants = [next(o for o in r["overrides"] if o.startswith("data=")) for r in results(campaign)]
    assert variants == ["data=fineweb_like", "data=fineweb_like", "data=raw", "data=raw"]
    assert merged[0].parts[-2] == "0" and merged[2].parts[-2] == "2"


@pytest.mark.extended  # ~11 min for the campaign; the CI tier trains through test_evaluation's campaign and test_train_hf
def test_every_run_checkpoints_at_the_token_interval(campaign):
    for point, r in enumerate(results(campaign)):
        assert r["final_step"] == STEPS and r["tokens"] == STEPS * 1024
        assert r["checkpoints"] == list(range(EVERY, STEPS + 1, EVERY))
        ckpt = layout.checkpoint_dir(campaign.run_dir(), "train", point)
        for step in r["checkpoints"]:
            marker = json.loads((ckpt / f"checkpoint-{step}" / "launcher-complete.json").read_text())
            assert marker["step"] == step and marker["tokens"] == step * 1024
            assert (ckpt / f"checkpoint-{step}" / "model.safetensors").exists()
        assert (layout.output_dir(campaign.run_dir(), "train", point, 0) / "model" / "config.json").exists()
    losses = [r["final_loss"] for r in results(campaign)]
    assert len(set(losses)) == 4  # four different runs, not one copied


@pytest.mark.extended  # ~11 min for the campaign; the CI tier trains through test_evaluation's campaign and test_train_hf
def test_a_run_stopped_by_its_time_limit_resumes_and_ends_like_an_uninterrupted_one(campaign, dev_slurm, corpus,
                                                                                    tmp_path):
    dcli = CLI(tmp_path / "runs", env=dev_slurm)
    (tmp_path / "runs").mkdir()
    dcli("run", "pipeline=ablation", "data=raw", "seed=1", "cluster=dev", *small(corpus),
         "pipeline.stages.train.resources.time=1", "pipeline.stages.train.requeue.signal_delay_s=10", timeout=600)
    st = dcli.wait(timeout=1200, poll=5)
    assert st["state"] == "COMPLETED", st
    plan = json.loads((dcli.run_dir() / "plan.json").read_text())
    h = next(s["hash"] for s in plan["stages"] if s["name"] == "train")
    marker = json.loads(layout.marker_path(dcli.run_dir(), "train", h, 0).read_text())
    assert marker["restarts"] >= 1, "the time limit never stopped the run: make the run longer"
    log = "".join(p.read_text() for p in (dcli.run_dir() / "stages" / "train" / "logs").glob("*.err"))
    assert "resuming from checkpoint-" in log and "scontrol requeue" in log, log[-3000:]
    mine, reference = results(dcli)[0], results(campaign)[2]  # the campaign's data=raw seed=1
    assert {"data=raw", "seed=1"} <= set(reference["overrides"])
    assert mine["resumed_from"] is not None
    assert mine["final_step"] == reference["final_step"] == STEPS
    assert mine["final_loss"] == pytest.approx(reference["final_loss"], abs=1e-5)
