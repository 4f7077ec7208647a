"""kind=publish: a folder of the run to a hub repo (created if needed, private by default) in one commit
with the generated card (jobs/adapters/hub_card.py), or with upload_large_folder (resumable, for big folders)
plus the card (huggingface_hub 1.33 marks upload_large_folder deprecated in favour of upload_folder;
it still resumes from its progress files under <source>/.cache/huggingface). The token is read from the variable the stage names (publish.token_env), which the
task inherits from the submitting shell; it is never written anywhere. huggingface_hub is imported
here only; HF_ENDPOINT (the profile's hub_endpoint) points it at a mirror."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict

from jobs.adapters import hub_card
from jobs import layout

reruns_when_complete = False
# publish talks to the hub itself (online, with its token): its section is kept as written
resolves_hub_references = False


def run(task) -> Dict[str, Any]:
    from huggingface_hub import CommitOperationAdd, HfApi

    p = layout.Folders(task.spec, task.point).fill(task.payload["publish"])
    token = os.environ.get(p["token_env"])
    if not token:
        raise RuntimeError(f"publish.token_env: {p['token_env']} is not set in this task's environment")
    source = Path(p["source"])
    if not source.is_dir():
        raise FileNotFoundError(f"publish.source: {source} is not a folder")
    names = hub_card.files(source, p["allow_patterns"], p["ignore_patterns"])
    if not names:
        raise FileNotFoundError(f"publish.source: no file of {source} passes allow/ignore patterns")
    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=token)
    repo = api.create_repo(p["repo_id"], repo_type=p["repo_type"], private=p["private"], exist_ok=True)
    message = p["commit_message"] or f"launcher: run {task.spec['run_id']}, stage {task.stage}"
    card = hub_card.render(task.run_dir, task.stage, task.point, p, str(source)) if p["card"] else None
    task.log(f"publish: {len(names)} file(s) of {source} to {p['repo_type']} {p['repo_id']} "
        f"({'private' if p['private'] else 'public'}){' + README.md card' if card else ''}")
    if p["large"]:
        api.upload_large_folder(repo_id=p["repo_id"], folder_path=str(source), repo_type=p["repo_type"],
                                allow_patterns=names, private=p["private"])
        commit = api.upload_file(path_or_fileobj=card.encode(), path_in_repo="README.md", repo_id=p["repo_id"],
                                 repo_type=p["repo_type"], commit_message=message) if card else None
    else:
        ops = [CommitOperationAdd(path_in_repo=n, path_or_fileobj=str(source / n)) for n in names]
        if card:
            ops.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card.encode()))
        commit = api.create_commit(repo_id=p["repo_id"], repo_type=p["repo_type"], operations=ops,
                                   commit_message=message)
    if card:
        (task.ctx.output_dir / "README.md").write_text(card)
    oid = getattr(commit, "oid", None)
    task.log(f"publish: {repo} commit {oid}")
    return {"repo": str(repo), "repo_id": p["repo_id"], "repo_type": p["repo_type"], "private": p["private"],
            "commit": oid, "files": names, "card": bool(card), "large": p["large"]}
