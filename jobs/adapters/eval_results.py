"""The evaluation results of a run, as files: one JSON per scored checkpoint
(stages/<stage>/evals/<point>/step-<N>.json, written by kind=evaluate) and the table the report reads
(out/<point>/0/results.csv: one row per task and metric). Standard library only: the login side's
report reads them with rows() and COLUMNS."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Dict, List

from jobs import layout

COLUMNS = ("campaign", "run_id", "point", "variant", "seed", "step", "tokens", "task", "metric", "value", "stderr",
           "random_baseline", "higher_is_better")


def variant(overrides: List[List[str]], point: int) -> str:
    """The overrides that tell this run's data variant from the others (the seed aside): the result
    rows' `variant`, and `launcher report`'s cost per variant."""
    varying = {o for p in overrides for o in p if any(o not in q for q in overrides)}
    return " ".join(o for o in overrides[point] if o in varying and not o.startswith("seed=")) or "all"


def results_dir(run_dir: Path, stage: str, point: int) -> Path:
    """Where the result files of one sweep point of an evaluation stage are."""
    return layout.stage_dir(run_dir, stage) / "evals" / str(point)


def rows(result: Dict[str, Any]) -> List[Dict[str, Any]]:
    """One result file → the report's rows (one per task and metric)."""
    specs = {t["name"]: t for t in result["tasks"]}
    out = []
    for name, metrics in result["metrics"].items():
        for metric, value in metrics.items():
            if metric.endswith("_stderr"):
                continue
            t = specs.get(name, {})
            out.append({"campaign": result["campaign"], "run_id": result["run_id"], "point": result["point"],
                        "variant": result["variant"], "seed": result["seed"], "step": result["step"],
                        "tokens": result["tokens"], "task": name, "metric": metric, "value": value,
                        "stderr": metrics.get(metric + "_stderr"), "random_baseline": t.get("random_baseline"),
                        "higher_is_better": t.get("higher_is_better", True)})
    return out


def write_table(results: Path, csv_path: Path) -> List[int]:
    """Every result file of a point → one CSV (written to a temporary name, then renamed); returns the
    steps, in order."""
    files = sorted(results.glob("step-*.json"), key=lambda p: int(p.stem.split("-")[1]))
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = csv_path.with_name(f".{csv_path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for p in files:
            for row in rows(json.loads(p.read_text())):
                w.writerow(row)
    os.replace(tmp, csv_path)
    return [int(p.stem.split("-")[1]) for p in files]
