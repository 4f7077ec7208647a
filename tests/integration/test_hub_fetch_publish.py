"""Hub references on the real dev Slurm, offline: a stage naming hf://org/tiny@main gets the fetch
stage the plan adds before it; the fetch records the commit it resolved; the stage itself runs with
HF_HUB_OFFLINE=1 and the profile's cache, and sees the cached snapshot folder. Without a fetch
stage, preflight requires the repo in the cache and names the stage, key and repo when it is not."""
from __future__ import annotations

import json

from conftest import CLI, hub_cache_with, queued

MODEL = "+pipeline.stages.reduce.params.model"


def offline_cli(tmp_path, dev_slurm) -> CLI:
    root = tmp_path / "runs"
    root.mkdir()
    return CLI(root, env={**dev_slurm, "HF_HUB_OFFLINE": "1"})  # no hub is reachable from the tests


def test_a_stage_naming_a_hub_model_reads_it_offline_from_the_shared_cache(tmp_path, dev_slurm, cpu_python):
    cache = hub_cache_with(tmp_path / "hf")
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
    cache = hub_cache_with(tmp_path / "hf")
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


def test_publish_sends_the_exact_files_and_the_card_to_the_hub(tmp_path, dev_slurm, cpu_python):
    from hub_standin import StandinHub

    hub = StandinHub()
    source = tmp_path / "model"
    source.mkdir()
    (source / "config.json").write_text('{"model_type": "llama"}')
    (source / "model.safetensors").write_bytes(bytes(range(256)) * 4)
    root = tmp_path / "runs"
    root.mkdir()
    cli = CLI(root, env={**dev_slurm, "HF_TOKEN": "test-token-123"})
    args = ("pipeline=publish", "cluster=dev", f"cluster.hub_endpoint={hub.url}", f"pipeline.vars.source={source}",
            "pipeline.vars.repo_id=org/tiny-demo")
    plan = cli("plan", *args).stdout
    assert "publish: publish" in plan and "    config.json\n    model.safetensors\n    README.md (the card)" in plan
    assert "# org/tiny-demo" in plan and "## Scores" in plan
    cli("run", *args)
    st = cli.wait(timeout=300, poll=2)
    assert st["state"] == "COMPLETED", st
    hub.close()
    calls = [(m, path.split("?")[0]) for m, path, _, _ in hub.requests if path != "/api/agent-harnesses"]
    assert ("POST", "/api/repos/create") in calls
    create = next(b for m, p, _, b in hub.requests if p.startswith("/api/repos/create"))
    assert create["organization"] == "org" and create["name"] == "tiny-demo" and create["visibility"] == "private"
    preupload = next(b for m, p, _, b in hub.requests if "/preupload/" in p)
    assert sorted(f["path"] for f in preupload["files"]) == ["README.md", "config.json", "model.safetensors"]
    commit_headers, commit = next((h, b) for m, p, h, b in hub.requests if p.startswith("/api/models/org/tiny-demo/commit/"))
    assert commit_headers.get("authorization") == "Bearer test-token-123"
    assert commit[0]["key"] == "header" and commit[0]["value"]["summary"].startswith("launcher: run ")
    uploaded = hub.files["org/tiny-demo"]
    assert uploaded["model.safetensors"] == (source / "model.safetensors").read_bytes()
    assert uploaded["config.json"] == (source / "config.json").read_bytes()
    card = uploaded["README.md"].decode()
    assert card.startswith("---\ntags:") and "# org/tiny-demo" in card and "run `" in card and "## Configuration" in card
    run = cli.run_dir()
    assert "test-token-123" not in "".join(p.read_text(errors="replace") for p in run.rglob("*") if p.is_file())

    # large: upload_large_folder (resumable: it keeps its progress under the source's .cache/huggingface),
    # then the card in a commit of its own
    hub = StandinHub()
    cli("run", "pipeline=publish", "cluster=dev", f"cluster.hub_endpoint={hub.url}", f"pipeline.vars.source={source}",
        "pipeline.vars.repo_id=org/tiny-large", "pipeline.stages.publish.publish.large=true")
    st = cli.wait(timeout=300, poll=2)
    hub.close()
    assert st["state"] == "COMPLETED", st
    assert sorted(hub.files["org/tiny-large"]) == ["README.md", "config.json", "model.safetensors"]
    commits = [b for m, p, _, b in hub.requests if "/commit/" in p]
    assert [c[0]["value"]["summary"].startswith("launcher: run ") for c in commits] == [False, True]  # files, card


def test_publish_without_a_token_fails_before_submission(tmp_path, dev_slurm):

    root = tmp_path / "runs"
    root.mkdir()
    cli = CLI(root, env=dev_slurm)
    cli.env.pop("HF_TOKEN", None)
    p = cli("run", "pipeline=publish", "cluster=dev", f"pipeline.vars.source={tmp_path}", "pipeline.vars.repo_id=org/x",
            check=False)
    assert p.returncode == 1
    assert "stage 'publish': pipeline.stages.publish.publish.token_env: publishing needs a hub token: HF_TOKEN is " \
           "not set in this shell" in p.stderr, p.stderr
    assert queued(dev_slurm, root=root) == set() and not any(root.glob("*/run.json"))
