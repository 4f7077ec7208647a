"""The quantization rows of `launcher report`: what each quantize stage's result.json says (method,
type, file sizes, bits per byte of the original and the quantized model; jobs/kinds/quantize.py), one
row per sweep point. Read from the run directory as it is now; a stage still running has none."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Iterable, List

COLUMNS = ("run", "stage", "point", "method", "type", "size_mb", "original_size_mb", "bpb_original",
           "bpb_quantized", "bpb_delta", "bpb_relative", "tokenizer_agreement")


def rows(runs: Iterable[Any]) -> List[Dict[str, Any]]:
    """One row per result.json with a "quantization" section under <run>/stages/*/out/<point>/<task>/."""
    out = []
    for run in runs:
        for path in sorted(Path(run.path).glob("stages/*/out/*/*/result.json")):
            try:
                q = json.loads(path.read_text()).get("quantization")
            except (OSError, ValueError, AttributeError):
                continue
            if not isinstance(q, dict):
                continue
            b = q.get("bits_per_byte") or {}
            out.append({"run": run.id, "stage": path.parents[3].name, "point": int(path.parents[1].name),
                        "method": q.get("method"), "type": q.get("type"), "size_mb": q.get("size_mb"),
                        "original_size_mb": q.get("original_size_mb"), "bpb_original": b.get("original"),
                        "bpb_quantized": b.get("quantized"), "bpb_delta": b.get("delta"),
                        "bpb_relative": b.get("relative"), "tokenizer_agreement": q.get("tokenizer_agreement")})
    return out


def lines(table: List[Dict[str, Any]]) -> List[str]:
    """The rows as text for the terminal."""
    def num(v, f="{:.4f}"):
        return "-" if v is None else f.format(v)

    return [f"{r['stage']}[{r['point']}] {r['method']} {r['type']}: {num(r['size_mb'], '{:.2f}')} MB (from "
            f"{num(r['original_size_mb'], '{:.2f}')} MB), bits per byte {num(r['bpb_original'])} -> "
            f"{num(r['bpb_quantized'])} ({num(r['bpb_delta'], '{:+.4f}')})" for r in table]
