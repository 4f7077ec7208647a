"""The card (README.md) a publish stage uploads, and the exact files it uploads. Standard library only:
`launcher plan` renders both from the plan folder, the publish task from the run folder (then with the
scores of the run's evaluation stages)."""
from __future__ import annotations

import csv
import fnmatch
import json
import os
from pathlib import Path
from typing import Any, Dict, List

from jobs import point_configs


def files(source: str | Path, allow: List[str], ignore: List[str], limit: int | None = None) -> List[str]:
    """Paths (relative, sorted) under source that the patterns let through; README.md is the card's.
    With `limit`, the first `limit` of them in walking order (`launcher plan` shows a sample of a huge
    folder instead of walking all of it). A folder that cannot be read, or a name too long to stat,
    is skipped, not raised (os.walk, os.path)."""
    root = Path(source)
    out: List[str] = []
    if not os.path.isdir(root):
        return out
    for d, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            p = Path(d) / name
            rel = p.relative_to(root).as_posix()
            if not os.path.isfile(p) or rel == "README.md" and allow != ["README.md"]:
                continue
            if allow and not any(fnmatch.fnmatch(rel, a) for a in allow):
                continue
            if any(fnmatch.fnmatch(rel, i) for i in ignore):
                continue
            out.append(rel)
            if limit is not None and len(out) >= limit:
                return sorted(out)
    return sorted(out)


def scores(run_dir: Path, point: int) -> List[Dict[str, Any]]:
    """The last checkpoint's value of each task and metric of every evaluation stage of the run."""
    last: Dict[tuple, Dict[str, Any]] = {}
    for table in sorted(Path(run_dir).glob(f"stages/*/out/{point}/0/results.csv")):
        with open(table, newline="") as f:
            for row in csv.DictReader(f):
                k = (table.parts[-5], row["task"], row["metric"])
                if k not in last or int(row["step"]) >= int(last[k]["step"]):
                    last[k] = {"stage": k[0], **row}
    return list(last.values())


def render(run_dir: Path, stage: str, point: int, publish: Dict[str, Any], source: str,
           quantization: Dict[str, Any] | None = None) -> str:
    """The card of one publish task (templates/model_card.md.j2), from what the run directory holds now.
    A quantize stage's card (publish: {repo_id: a name, repo_type: model}) adds its `quantization`:
    method, type, file sizes, bits per byte of the original and the quantized model."""
    from jobs.kinds import prepares_data  # the registry only: no kind module is imported
    from jobs.runtime import templating

    run_dir = Path(run_dir)
    meta = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").exists() else {}
    config = point_configs.read(run_dir, point)
    config.pop("cluster", None)  # site details (paths, accounts) stay out of a public card
    data = config.get("data") or {}
    stages = (config.get("pipeline") or {}).get("stages") or {}
    # a data section only when the run prepared data with the recipe (datatrove stages)
    datatrove = any(prepares_data(str(st.get("kind"))) for st in stages.values())
    return templating.render(
        "model_card.md.j2", pipeline=meta.get("pipeline", "pipeline"), repo_id=publish["repo_id"],
        kind="dataset" if publish["repo_type"] == "dataset" else "model", run_id=meta.get("id", "?"),
        campaign=meta["campaign"] if meta.get("campaign") not in (None, meta.get("id")) else None,
        stage=stage, source=source, overrides=(meta.get("points") or [[]])[point],
        recipe=data.get("recipe") if datatrove else None,
        filters=[k for k, v in (data.get("filters") or {}).items() if v is not None],
        vocab_size=(data.get("tokenizer") or {}).get("vocab_size"), scores=scores(run_dir, point),
        config_json=json.dumps(config, indent=1, sort_keys=True, default=str), quantization=quantization)
