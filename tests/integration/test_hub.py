"""Hub references on the real dev Slurm, offline: a stage naming hf://org/tiny@main gets the fetch
stage the plan adds before it; the fetch records the commit it resolved; the stage itself runs with
HF_HUB_OFFLINE=1 and the profile's cache, and sees the cached snapshot folder. Without a fetch
stage, preflight requires the repo in the cache and names the stage, key and repo when it is not."""
from __future__ import annotations

import json

from conftest import CLI, queued

MODEL = "+pipeline.stages.reduce.params.model"


def cache_with(root, repo="org/tiny", commit="0123abcd", ref="main"):
    folder = root / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / ref).write_text(commit)
    (folder / "snapshots" / commit).mkdir(parents=True)
    (folder / "snapshots" / commit / "config.json").write_text("{}")
    return root


def offline_cli(tmp_path, dev_slurm) -> CLI:
    root = tmp_path / "runs"
    root.mkdir()
    return CLI(root, env={**dev_slurm, "HF_HUB_OFFLINE": "1"})  # no hub is reachable from the tests


def test_a_stage_naming_a_hub_model_reads_it_offline_from_the_shared_cache(tmp_path, dev_slurm, cpu_python):
    cache = cache_with(tmp_path / "hf")
    cli = offline_cli(tmp_path, dev_slurm)
    cli("run", "pipeline=smoke", "cluster=dev", f"cluster.hub_cache={cache}", f"{MODEL}=hf://org/tiny@main")
    st = cli.wait(timeout=300, poll=2)
    assert st["state"] == "COMPLETED", st
    assert [s["name"] for s in st["stages"]][0] == "hub_fetch"
    run = cli.run_dir()
    plan = json.loads((run / "plan.json").read_text())
    deps = {s["name"]: [(d["parent"], d["kind"]) for d in s["deps"]] for s in plan["stages"]}
    assert ("hub_fetch", "afterok") in deps["reduce"] and not any(p == "hub_fetch" for p, _ in deps["shards"])
    revisions = json.loads((run / "hub" / "revisions-0.json").read_text())
    assert revisions["hf://org/tiny@main"]["commit"] == "0123abcd"
    result = json.loads((run / "stages/reduce/out/0/0/result.json").read_text())
    assert result["params"]["model"] == str(cache / "models--org--tiny/snapshots/0123abcd")
    assert result["hub_env"] == {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}


def test_without_a_fetch_stage_preflight_requires_the_repo_in_the_cache(tmp_path, dev_slurm):
    cache = cache_with(tmp_path / "hf")
    cli = offline_cli(tmp_path, dev_slurm)
    p = cli("run", "pipeline=smoke", "cluster=dev", f"cluster.hub_cache={cache}", "cluster.hub_fetch=never",
            f"{MODEL}=hf://org/missing", check=False)
    assert p.returncode == 1
    assert "stage 'reduce': pipeline.stages.reduce.params.model: org/missing" in p.stderr, p.stderr
    assert "is not in the hub cache" in p.stderr
    assert queued(dev_slurm, root=cli.run_root) == set()
    # the same with a repo that is in the cache: passes offline, and no fetch stage is added
    cli("run", "pipeline=smoke", "cluster=dev", f"cluster.hub_cache={cache}", "cluster.hub_fetch=never",
        f"{MODEL}=hf://org/tiny")
    st = cli.wait(timeout=300, poll=2)
    assert st["state"] == "COMPLETED" and "hub_fetch" not in [s["name"] for s in st["stages"]], st
