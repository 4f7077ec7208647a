"""What the datatrove stages of a run did: per block, documents in, out and removed, and tokens
(summed from datatrove's per-rank stats files), and samples of what a filter removed or kept.
Reads files only (jsonl.gz via the standard library): nothing here imports datatrove."""
from __future__ import annotations

import gzip
import json
import random
from pathlib import Path
from typing import Any, Dict, Iterator, List

from jobs import layout

from launcher.errors import LauncherError
from launcher import kinds
from launcher.plan.model import Plan


def _add(into: Dict[str, Any], stats: Dict[str, Any]) -> None:
    for k, v in stats.items():
        if isinstance(v, dict):
            v = v.get("total")
        if isinstance(v, (int, float)):
            into[k] = into.get(k, 0) + v


def block_rows(stats_dir: Path) -> tuple[int, List[Dict[str, Any]]]:
    """(ranks with stats, one row per block summed over ranks)."""
    files = sorted(stats_dir.glob("*.json")) if stats_dir.is_dir() else []
    names: List[str] = []
    sums: List[Dict[str, Any]] = []
    for f in files:
        for i, block in enumerate(json.loads(f.read_text())):
            if i == len(sums):
                names.append(block["name"])
                sums.append({})
            _add(sums[i], block.get("stats", {}))
    rows = []
    for i, (name, s) in enumerate(zip(names, sums)):
        is_reader = "READER" in name
        rows.append({
            "index": i, "block": name,
            "in": None if is_reader else s.get("total"),
            "out": s.get("documents") if is_reader else s.get("forwarded", s.get("total") if "WRITER" in name else None),
            "removed": s.get("dropped"),
            "tokens": s.get("tokens"),
            "reasons": {k[len("dropped_"):]: v for k, v in s.items() if k.startswith("dropped_")},
        })
    return len(files), rows


def summarize(run_dir: Path, plan: Plan) -> Dict[str, Any]:
    """{stage: {point: {ranks, tasks, blocks: [rows]}}} for every preprocess stage."""
    out: Dict[str, Any] = {}
    for name, stage in plan.stages.items():
        if kinds.get(stage.kind).output_layout != "datatrove":
            continue
        out[name] = {}
        for point in range(stage.points):
            ranks, rows = block_rows(layout.datatrove_dir(run_dir, name, stage.hash, point, "logs") / "stats")
            output = layout.datatrove_dir(run_dir, name, stage.hash, point, "output")
            out[name][str(point)] = {"ranks": ranks, "tasks": stage.tasks_per_point, "blocks": rows,
                                     "output": str(output)}
            check = output / "tokenizer_check.json"  # written by jobs.adapters.datatrove_blocks.TrainTokenizer
            if check.exists():
                out[name][str(point)]["tokenizer_check"] = json.loads(check.read_text())
    return out


def summary_tables(summary: Dict[str, Any]):
    from rich.table import Table

    def n(v):
        return "-" if v is None else f"{v:,}"

    for stage, points in summary.items():
        for point, s in points.items():
            t = Table(title=f"{stage} (point {point}): {s['ranks']}/{s['tasks']} rank(s) reported",
                      title_justify="left", caption=s["output"], caption_justify="left")
            for col in ("#", "block", "docs in", "docs out", "removed", "removed %", "tokens", "why removed"):
                t.add_column(col, justify="right" if col not in ("block", "why removed") else "left")
            for r in s["blocks"]:
                pct = f"{100 * r['removed'] / r['in']:.1f}" if r["removed"] and r["in"] else "-"
                why = ", ".join(f"{k} {v:,}" for k, v in sorted(r["reasons"].items(), key=lambda kv: -kv[1])[:3])
                t.add_row(str(r["index"]), r["block"], n(r["in"]), n(r["out"]), n(r["removed"]), pct,
                          n(r["tokens"]), why)
            yield t
            if "tokenizer_check" in s:
                c = s["tokenizer_check"]
                yield (f"tokenizer: vocab {c['vocab_size']:,}, trained on {c['sample_documents']:,} document(s); "
                       f"{c['unused']:,} token(s) unused in the sample\n  longest: "
                       + " | ".join(repr(x) for x in c["longest"][:10])
                       + "\n  rarest:  " + " | ".join(f"{t!r}×{k}" for t, k in c["rarest"][:10]))


# -- inspect ---------------------------------------------------------------------------------------

def _read_jsonl(folder: Path) -> Iterator[Dict[str, Any]]:
    for f in sorted(folder.rglob("*")):
        if f.name.endswith((".jsonl.gz", ".jsonl")):
            opener = gzip.open if f.name.endswith(".gz") else open
            with opener(f, "rt", encoding="utf-8") as fh:
                for line in fh:
                    if line.strip():
                        yield json.loads(line)
        elif f.suffix == ".parquet":
            raise LauncherError(f"{f} is parquet; inspect reads jsonl (write the stage's output with JsonlWriter)")


def removed_folders(run_dir: Path, plan: Plan, stage: str, point: int) -> Dict[int, Path]:
    """block index → folder of the documents that block removed."""
    s = plan.stages.get(stage)
    if s is None or kinds.get(s.kind).output_layout != "datatrove":
        names = [n for n, x in plan.stages.items() if kinds.get(x.kind).output_layout == "datatrove"]
        raise LauncherError(f"'{stage}' is not a datatrove stage of this run (those are: {', '.join(names)})")
    base = layout.datatrove_dir(run_dir, stage, s.hash, point, "removed")
    found = {}
    for d in sorted(base.iterdir()) if base.is_dir() else []:
        head, _, tail = d.name.partition("-")
        if head.isdigit() and tail:
            found[int(head)] = d
    return found


def sample(run_dir: Path, plan: Plan, stage: str, block: str, removed: bool = True, n: int = 5,
           point: int = 0, seed: int = 0) -> tuple[str, int, List[Dict[str, Any]]]:
    """(block folder name, documents in the pool, n of them at random) that `block` (class name or
    index) removed, or kept: what it let through is the stage's output plus what later blocks removed."""
    folders = removed_folders(run_dir, plan, stage, point)
    want = block.lower()
    exact = [i for i, d in folders.items() if want in (str(i), d.name.split("-", 1)[1].lower())]
    matches = exact or [i for i, d in folders.items() if want in d.name.split("-", 1)[1].lower()]
    if not matches:
        names = ", ".join(d.name for d in folders.values()) or "none (did the stage run, with keep_removed?)"
        raise LauncherError(f"stage '{stage}' has no removed documents of a block '{block}' (blocks with removed "
                            f"documents: {names})")
    if len(matches) > 1:
        raise LauncherError(f"'{block}' names blocks {matches} of stage '{stage}'; give the index instead")
    i = matches[0]
    if removed:
        pools = [folders[i]]
    else:
        pools = [layout.datatrove_dir(run_dir, stage, plan.stages[stage].hash, point, "output")]
        pools += [d for j, d in folders.items() if j > i]
    docs = [d for p in pools for d in _read_jsonl(p)]
    picked = random.Random(seed).sample(docs, k=min(n, len(docs)))
    return folders[i].name, len(docs), picked


def show_sample(console, name: str, total: int, docs: List[Dict[str, Any]], removed: bool, chars: int) -> None:
    from rich.panel import Panel

    console.print(f"{name}: {total:,} document(s) {'removed' if removed else 'kept'}; {len(docs)} at random")
    for d in docs:
        meta = {k: v for k, v in (d.get("metadata") or {}).items() if k not in ("file_path",)}
        text = d.get("text", "")
        body = text[:chars] + (f" … [{len(text) - chars:,} more chars]" if len(text) > chars else "")
        console.print(Panel(body, title=f"{d.get('id')}  {json.dumps(meta, ensure_ascii=False)[:160]}",
                            title_align="left"))

