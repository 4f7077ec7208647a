"""kind=fetch: download hub repos into the cluster's shared cache (HF_HUB_CACHE) before the stages that
name them run offline. One snapshot_download per repo, revisions as given (a branch or tag resolves
to the commit it points at now); the commits are recorded in the output (result.json) and in
<run>/hub/revisions-<point>.json, so the run says exactly what it used. huggingface_hub is imported here only."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Dict

from jobs.adapters import hub_refs as hub
from jobs import layout

reruns_when_complete = False
# hf:// references are what fetch downloads: kept as written
resolves_hub_references = False


def run(task) -> Dict[str, Any]:
    from huggingface_hub import snapshot_download

    f = task.payload["fetch"]
    cache = task.spec.get("hub_cache") or os.environ.get("HF_HUB_CACHE")
    if not cache:
        raise ValueError("kind=fetch: the cluster profile sets no hub_cache to download into")
    resolved = {}
    for value in f["repos"]:
        ref = hub.parse(value)
        t0 = time.time()
        task.log(f"fetch: {ref} into {cache}")
        path = snapshot_download(repo_id=ref.repo_id, repo_type=ref.repo_type, revision=ref.revision, cache_dir=cache,
                                 allow_patterns=f["allow_patterns"] or None, ignore_patterns=f["ignore_patterns"] or None)
        commit = Path(path).name
        files = sorted(str(p.relative_to(path)) for p in Path(path).rglob("*") if p.is_file())
        resolved[value] = {"repo_id": ref.repo_id, "repo_type": ref.repo_type, "revision": ref.revision,
                           "commit": commit, "path": path, "files": len(files), "seconds": round(time.time() - t0, 2)}
        task.log(f"fetch: {ref.repo_id}@{ref.revision} = commit {commit}, {len(files)} file(s) in {time.time() - t0:.1f} s")
    layout.atomic_write_json(Path(task.run_dir) / "hub" / f"revisions-{task.point}.json", resolved)
    return {"cache": cache, "repos": resolved}
