"""Campaign report: from the evaluation stage's result rows (one per run point × checkpoint × task ×
metric), an offline HTML page with one plot per (task, metric) and a table of benchmark signal
criteria in the spirit of FineWeb / FineTasks ("is this benchmark worth looking at for a data
ablation of this size?").

Login-node side: standard library only at import time. matplotlib (Agg) is imported inside
`plot_curves`, so `import launcher.reports.report` stays light (no numpy).

Definitions (all computed on the *score* = value if higher_is_better else -value, so that "up" is
always "better"; a run = one (campaign, run_id, point, variant, seed)):

* monotonicity = mean over runs with >= MIN_CHECKPOINTS checkpoints of spearman(tokens, score),
  Spearman = Pearson correlation of the average ranks (ties share the mean of their ranks); a run
  whose score is constant over its checkpoints counts 0.0 (no trend). None if no run qualifies.
* final checkpoint of a run = its row(s) with the largest tokens; final score of the run = the score
  there (rows repeated for the same checkpoint are averaged).
* seed_std = mean over variants with >= 2 runs of statistics.stdev(final scores of that variant's
  runs) (sample std, ddof=1). None if no variant has 2 seeds.
* separation = max over pairs of variants (A, B) of |mean_A - mean_B| / seed_std, means of final
  scores. None if seed_std is None or 0, or fewer than 2 variants.
* above_random = (mean of the final scores over all runs - score(random_baseline)) / seed_std,
  i.e. (mean value - baseline) / seed_std for higher-is-better metrics and
  (baseline - mean value) / seed_std otherwise. None without a baseline or usable seed_std.
* best_variant = the variant with the highest mean final score.
* trusted = monotonicity >= MIN_MONOTONICITY and separation >= MIN_SEPARATION and
  (above_random >= MIN_ABOVE_RANDOM or the metric has no random baseline). Any None -> False.
"""
from __future__ import annotations

import csv
import json
import math
import re
import statistics
from collections import Counter, defaultdict
from itertools import combinations
from pathlib import Path
from typing import Any, BinaryIO, Dict, Iterable, List, Optional, Tuple, Union

COLUMNS = ["campaign", "run_id", "point", "variant", "seed", "step", "tokens", "task", "metric", "value",
           "stderr", "random_baseline", "higher_is_better"]

# Thresholds of `trusted` (FineTasks, HuggingFace 2024, "finding signal in a haystack of 200+
# multilingual tasks": a task is kept when it improves monotonically with training, its seed noise
# is small compared to the gaps between data variants, and the models score above chance).
MIN_CHECKPOINTS = 3      # Spearman over fewer than 3 checkpoints says nothing (2 points: always ±1)
MIN_MONOTONICITY = 0.5   # mean Spearman(tokens, score) >= 0.5: the score mostly rises with training
MIN_SEPARATION = 2.0     # best pairwise gap between variant means >= 2 seed standard deviations
MIN_ABOVE_RANDOM = 2.0   # final mean at least 2 seed standard deviations better than random guessing


# -- reading ---------------------------------------------------------------------------------------

def _int(v: Any) -> Optional[int]:
    if v is None or (isinstance(v, str) and not v.strip()):
        return None
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, (int,)):
        return v
    return int(float(v))


def _float(v: Any) -> Optional[float]:
    if v is None or (isinstance(v, str) and not v.strip()):
        return None
    try:
        f = float(v)
    except TypeError:
        raise ValueError(f"not a number: {v!r}") from None
    return None if math.isnan(f) else f


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if v is None:
        return True
    s = str(v).strip().lower()
    if s in ("", "true", "1", "yes", "y", "t"):
        return True          # empty: the common case (accuracy-like)
    if s in ("false", "0", "no", "n", "f"):
        return False
    raise ValueError(f"higher_is_better must be true/false, not {v!r}")


def _coerce(row: Dict[str, Any]) -> Dict[str, Any]:
    r = dict(row)
    for k in ("campaign", "run_id", "variant", "task", "metric"):
        r[k] = "" if r.get(k) is None else str(r[k])
    for k in ("point", "seed", "step", "tokens"):
        r[k] = _int(r.get(k))
    for k in ("value", "stderr", "random_baseline"):
        r[k] = _float(r.get(k))
    r["higher_is_better"] = _bool(r.get("higher_is_better"))
    return r


def read_rows(paths: Iterable[Path]) -> List[Dict[str, Any]]:
    """All rows of the evaluation CSV files, typed: point/seed/step/tokens int (None when empty),
    value/stderr/random_baseline float (None when empty or NaN), higher_is_better bool."""
    rows: List[Dict[str, Any]] = []
    for p in paths:
        with open(p, newline="", encoding="utf-8") as fh:
            for i, raw in enumerate(csv.DictReader(fh), start=2):
                try:
                    rows.append(_coerce(raw))
                except ValueError as e:
                    raise ValueError(f"{p}:{i}: {e}") from None
    return rows


# -- statistics ------------------------------------------------------------------------------------

def _avg_ranks(xs: List[float]) -> List[float]:
    """1-based ranks; tied values get the mean of the ranks they span."""
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    ranks = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(xs: List[float], ys: List[float]) -> Optional[float]:
    """Spearman rank correlation with ties (Pearson of average ranks). None if x is constant;
    0.0 if y is constant (no trend)."""
    rx, ry = _avg_ranks(xs), _avg_ranks(ys)
    n = len(xs)
    mx, my = sum(rx) / n, sum(ry) / n
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    if sxx == 0:
        return None
    if syy == 0:
        return 0.0
    return sum((a - mx) * (b - my) for a, b in zip(rx, ry)) / math.sqrt(sxx * syy)


RunKey = Tuple[str, str, Optional[int], str, Optional[int]]


def _x(r: Dict[str, Any]) -> Optional[int]:
    return r["tokens"] if r["tokens"] is not None else r["step"]


def _groups(rows: Iterable[Dict[str, Any]]) -> Dict[Tuple[str, str], List[Dict[str, Any]]]:
    g: Dict[Tuple[str, str], List[Dict[str, Any]]] = defaultdict(list)
    for r in rows:
        r = _coerce(r)
        if r["value"] is None or _x(r) is None:
            continue
        g[(r["task"], r["metric"])].append(r)
    return dict(sorted(g.items()))


def _runs(rows: List[Dict[str, Any]]) -> Dict[RunKey, Dict[int, float]]:
    """run → {tokens: mean value at that checkpoint} (values, not scores)."""
    acc: Dict[RunKey, Dict[int, List[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        acc[(r["campaign"], r["run_id"], r["point"], r["variant"], r["seed"])][_x(r)].append(r["value"])
    return {k: {t: sum(v) / len(v) for t, v in sorted(c.items())} for k, c in sorted(acc.items(), key=lambda kv: str(kv[0]))}


def _mean(xs: List[float]) -> float:
    return sum(xs) / len(xs)


def _entry(task: str, metric: str, rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    hib = Counter(r["higher_is_better"] for r in rows).most_common(1)[0][0]
    sign = 1.0 if hib else -1.0
    baselines = [r["random_baseline"] for r in rows if r["random_baseline"] is not None]
    baseline = Counter(baselines).most_common(1)[0][0] if baselines else None
    runs = _runs(rows)

    rhos = []
    for curve in runs.values():
        if len(curve) >= MIN_CHECKPOINTS:
            rho = spearman(list(curve), [sign * v for v in curve.values()])
            if rho is not None:
                rhos.append(rho)
    monotonicity = _mean(rhos) if rhos else None

    final_value: Dict[RunKey, float] = {k: c[max(c)] for k, c in runs.items()}
    by_variant: Dict[str, List[float]] = defaultdict(list)
    for k, v in final_value.items():
        by_variant[k[3]].append(v)
    by_variant = dict(sorted(by_variant.items()))
    stds = [statistics.stdev(vs) for vs in by_variant.values() if len(vs) >= 2]
    seed_std = _mean(stds) if stds else None
    means = {v: _mean(vs) for v, vs in by_variant.items()}   # in value units
    usable = seed_std is not None and seed_std > 0

    separation = None
    if usable and len(means) >= 2:
        separation = max(abs(means[a] - means[b]) for a, b in combinations(means, 2)) / seed_std
    above_random = None
    if usable and baseline is not None:
        above_random = sign * (_mean(list(final_value.values())) - baseline) / seed_std
    best = max(means, key=lambda v: sign * means[v]) if means else None

    trusted = (monotonicity is not None and monotonicity >= MIN_MONOTONICITY
               and separation is not None and separation >= MIN_SEPARATION
               and (baseline is None or (above_random is not None and above_random >= MIN_ABOVE_RANDOM)))
    return {
        "task": task, "metric": metric, "higher_is_better": hib, "random_baseline": baseline,
        "runs": len(runs), "runs_for_monotonicity": len(rhos),
        "final_tokens": sorted({max(c) for c in runs.values()}),
        "monotonicity": monotonicity, "seed_std": seed_std, "separation": separation,
        "above_random": above_random, "best_variant": best,
        "variants": {v: {"mean": means[v], "std": statistics.stdev(vs) if len(vs) >= 2 else None, "n": len(vs)}
                     for v, vs in by_variant.items()},
        "trusted": bool(trusted),
    }


def signal_table(rows: Iterable[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One entry per (task, metric), sorted; see the module docstring for the formulas. The
    variants' means/stds are in the metric's own units (value, not score)."""
    return [_entry(t, m, rs) for (t, m), rs in _groups(rows).items()]


def curves(rows: Iterable[Dict[str, Any]]) -> List[Tuple[Dict[str, Any], List[Dict[str, Any]]]]:
    """(signal_table's entry, the rows of its curves) per (task, metric), sorted: one figure each
    (plot_curves), in the report and in `launcher dashboard`."""
    return [(_entry(t, m, rs), rs) for (t, m), rs in _groups(rows).items()]


# -- plots -----------------------------------------------------------------------------------------

def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s).strip("_.")[:80] or "x"


def _tokens(x: float) -> str:
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(x) >= div:
            return f"{x / div:g}{unit}"
    return f"{x:g}"


def plot_curves(rows: List[Dict[str, Any]], entry: Dict[str, Any], path: Union[Path, BinaryIO]) -> List[str]:
    """One PNG for one (task, metric), to a file path or a binary file object: per variant the mean over
    seeds against tokens, a min..max band across seeds, and thin per-seed lines; the random baseline
    dashed. Returns the legend labels of the mean curves (one per variant)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    runs = _runs(rows)
    variants = sorted({k[3] for k in runs})
    colors = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    labels = []
    try:
        for i, variant in enumerate(variants):
            c = colors(i % 10)
            curves = [cv for k, cv in runs.items() if k[3] == variant]
            for cv in curves:
                ax.plot(list(cv), list(cv.values()), color=c, lw=0.7, alpha=0.45)
            xs = sorted({t for cv in curves for t in cv})
            at = [[cv[t] for cv in curves if t in cv] for t in xs]
            ax.fill_between(xs, [min(a) for a in at], [max(a) for a in at], color=c, alpha=0.18, lw=0)
            label = f"{variant} ({len(curves)} seed{'s' if len(curves) != 1 else ''})"
            ax.plot(xs, [_mean(a) for a in at], color=c, lw=2.0, marker="o", ms=3, label=label)
            labels.append(label)
        if entry.get("random_baseline") is not None:
            ax.axhline(entry["random_baseline"], color="grey", ls="--", lw=1, label="random")
        ax.set_title(f"{entry['task']} · {entry['metric']} ({'↑' if entry['higher_is_better'] else '↓'} better)",
                     fontsize=10)
        ax.set_xlabel("tokens")
        ax.set_ylabel(entry["metric"])
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: _tokens(x)))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return labels


# -- page ------------------------------------------------------------------------------------------

def fmt(x: Any) -> str:
    """Numbers of the page: 3 significant figures; None as an em dash."""
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "✓" if x else "✗"
    if isinstance(x, float) and math.isinf(x):
        return "∞" if x > 0 else "-∞"
    return f"{x:#.3g}"  # keeps trailing zeros: 1.00, 0.570


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;
color:#222;padding:0 1em}
table{border-collapse:collapse;margin:1em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3} td.l,th.l{text-align:left}
td.ok{color:#11772e;font-weight:bold;text-align:center} td.no{color:#b3261e;font-weight:bold;text-align:center}
figure{display:inline-block;margin:.5em;vertical-align:top} figcaption{font-size:.8em;color:#555;max-width:640px}
dt{font-weight:bold;margin-top:.5em} .muted{color:#666;font-size:.85em}
"""


def write_report(rows: Iterable[Dict[str, Any]], out_dir: Path, title: str,
                 costs: Optional[Dict[str, Dict[str, Any]]] = None,
                 quantized: Optional[List[Dict[str, Any]]] = None) -> Path:
    """Write out_dir/index.html (+ plots/*.png, signal.json, results.csv, cost.json with `costs`); return
    the HTML path. The page has no external resources: images by relative path, CSS inline. `costs`:
    {variant: launcher.costs.summarize()} (launcher/run/usage.py cost_per_variant), a table when given.
    `quantized`: launcher/reports/quantization.py rows, a table (and quantization.json) when given."""
    rows = [_coerce(r) for r in rows]
    out_dir = Path(out_dir)
    plots = out_dir / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    pairs = curves(rows)
    table = [e for e, _ in pairs]

    figures = []
    for i, (e, rs) in enumerate(pairs):
        name = f"{i:02d}_{_slug(e['task'])}__{_slug(e['metric'])}.png"
        figures.append({"task": e["task"], "metric": e["metric"], "file": name,
                        "labels": plot_curves(rs, e, plots / name)})

    if costs is not None:
        (out_dir / "cost.json").write_text(json.dumps(costs, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if quantized:
        (out_dir / "quantization.json").write_text(json.dumps(quantized, indent=2) + "\n", encoding="utf-8")
    (out_dir / "signal.json").write_text(json.dumps(table, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    extra = sorted({k for r in rows for k in r} - set(COLUMNS))
    with open(out_dir / "results.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS + extra)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else ("true" if r[k] else "false") if isinstance(r.get(k), bool)
                            else r[k]) for k in COLUMNS + extra})

    from jobs.runtime import templating

    page = templating.render(
        "report.html.j2", title=title, css=CSS, n_rows=len(rows), table=table, figures=figures, fmt=fmt, costs=costs,
        quantized=quantized or [],
        n_runs=len({(r["campaign"], r["run_id"], r["point"], r["variant"], r["seed"]) for r in rows}),
        trusted=sum(e["trusted"] for e in table), variants=sorted({v for e in table for v in e["variants"]}),
        min_checkpoints=MIN_CHECKPOINTS, min_monotonicity=f"{MIN_MONOTONICITY:g}",
        min_separation=f"{MIN_SEPARATION:g}", min_above_random=f"{MIN_ABOVE_RANDOM:g}")
    index = out_dir / "index.html"
    index.write_text(page, encoding="utf-8")
    return index
