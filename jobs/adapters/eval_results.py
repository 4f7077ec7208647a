"""The evaluation results of a run, as files: one JSON per scored checkpoint
(stages/<stage>/evals/<point>/step-<N>.json, written by kind=evaluate; step-<N>-ema.json for the moving
average of its weights, when the training kept one) and the table the report reads
(out/<point>/0/results.csv: one row per task and metric; an EMA row's variant ends in "ema", so the report
draws the averaged weights as their own curve). Standard library only: the login side's
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


def result_name(step: int, weights: str = "raw") -> str:
    """The result file of one checkpoint's weights: step-<N>.json (raw), step-<N>-ema.json (moving average)."""
    return f"step-{step}.json" if weights == "raw" else f"step-{step}-{weights}.json"


def result_step(path: Path) -> int:
    """The step of a result file (step-<N>.json, step-<N>-ema.json)."""
    return int(path.stem.split("-")[1])


def row_variant(result: Dict[str, Any]) -> str:
    """The variant a result's rows carry: the run's, with " · ema" for the averaged weights ("ema" alone
    when the run has no variant), so raw and EMA curves stay apart."""
    if result.get("weights", "raw") == "raw":
        return result["variant"]
    return result["weights"] if result["variant"] == "all" else f"{result['variant']} · {result['weights']}"


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
                        "variant": row_variant(result), "seed": result["seed"], "step": result["step"],
                        "tokens": result["tokens"], "task": name, "metric": metric, "value": value,
                        "stderr": metrics.get(metric + "_stderr"), "random_baseline": t.get("random_baseline"),
                        "higher_is_better": t.get("higher_is_better", True)})
    return out


def write_table(results: Path, csv_path: Path) -> List[int]:
    """Every result file of a point → one CSV (written to a temporary name, then renamed); returns the
    steps scored, in order (a step whose raw and EMA weights were both scored: once)."""
    files = sorted(results.glob("step-*.json"), key=lambda p: (result_step(p), p.name))
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = csv_path.with_name(f".{csv_path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for p in files:
            for row in rows(json.loads(p.read_text())):
                w.writerow(row)
    os.replace(tmp, csv_path)
    return sorted({result_step(p) for p in files})
