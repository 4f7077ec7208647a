"""`launcher report`'s engine: signal criteria recomputed by hand from synthetic evaluation rows,
and the offline HTML page (PNG per task/metric, tables, signal.json, results.csv)."""
import csv
import json
import math
import statistics
import subprocess
import sys
from html.parser import HTMLParser
from itertools import combinations
from pathlib import Path

import pytest

from launcher.reports.report import (COLUMNS, MIN_ABOVE_RANDOM, MIN_MONOTONICITY, MIN_SEPARATION, fmt, read_rows, signal_table, write_report)

TOKENS = [1_000_000, 2_000_000, 3_000_000, 4_000_000]
# task "good" (accuracy, ↑, random 0.25): variant A clearly ahead, every run monotone.
GOOD = {("data=A", 0): [0.30, 0.36, 0.42, 0.50], ("data=A", 1): [0.31, 0.35, 0.43, 0.49],
        ("data=B", 0): [0.28, 0.30, 0.33, 0.35], ("data=B", 1): [0.27, 0.31, 0.32, 0.36]}
# task "noisy" (bits per byte, ↓, no baseline): no trend, variants within seed noise; one tie.
NOISY = {("data=A", 0): [1.00, 1.10, 0.95, 1.05], ("data=A", 1): [1.08, 0.97, 1.06, 1.00],
         ("data=B", 0): [1.02, 1.02, 1.09, 0.98], ("data=B", 1): [0.99, 1.07, 1.01, 1.04]}


def make_rows():
    rows = []
    for task, metric, hib, base, data in (("good", "acc", True, 0.25, GOOD), ("noisy", "bpb", False, None, NOISY)):
        for point, ((variant, seed), values) in enumerate(sorted(data.items())):
            for i, (tok, v) in enumerate(zip(TOKENS, values)):
                rows.append({"campaign": "c1", "run_id": "r1", "point": point, "variant": variant, "seed": seed,
                             "step": 100 * (i + 1), "tokens": tok, "task": task, "metric": metric, "value": v,
                             "stderr": 0.01, "random_baseline": base, "higher_is_better": hib})
    return rows


# -- independent re-computation --------------------------------------------------------------------

def hand_rank(xs):
    """rank = 1 + #smaller + (#equal - 1) / 2 (average rank of ties), counted, not sorted."""
    return [1 + sum(y < x for y in xs) + (sum(y == x for y in xs) - 1) / 2 for x in xs]


def hand_spearman(xs, ys):
    return statistics.correlation(hand_rank(xs), hand_rank(ys))


def hand_signal(data, hib, base):
    sign = 1 if hib else -1
    mono = statistics.mean(hand_spearman(TOKENS, [sign * v for v in vals]) for vals in data.values())
    finals = {}
    for (variant, _), vals in data.items():
        finals.setdefault(variant, []).append(vals[-1])
    seed_std = statistics.mean(statistics.stdev(v) for v in finals.values())
    means = {k: statistics.mean(v) for k, v in finals.items()}
    sep = max(abs(means[a] - means[b]) for a, b in combinations(means, 2)) / seed_std
    above = None if base is None else sign * (statistics.mean(v[-1] for v in data.values()) - base) / seed_std
    best = (max if hib else min)(means, key=means.get)
    return {"monotonicity": mono, "seed_std": seed_std, "separation": sep, "above_random": above,
            "best_variant": best, "means": means, "stds": {k: statistics.stdev(v) for k, v in finals.items()}}


def by_task(table):
    return {(e["task"], e["metric"]): e for e in table}


# -- signal_table ----------------------------------------------------------------------------------

def test_thresholds_are_the_documented_ones():
    assert (MIN_MONOTONICITY, MIN_SEPARATION, MIN_ABOVE_RANDOM) == (0.5, 2.0, 2.0)


def test_hand_spearman_handles_ties():
    # sanity of the test's own reference: ties get the mean rank
    assert hand_rank([3, 1, 3, 2]) == [3.5, 1, 3.5, 2]
    assert hand_spearman([1, 2, 3, 4], [1, 2, 3, 4]) == pytest.approx(1.0)


@pytest.mark.parametrize("task,metric,data,hib,base", [("good", "acc", GOOD, True, 0.25),
                                                       ("noisy", "bpb", NOISY, False, None)])
def test_signal_numbers_match_hand_computation(task, metric, data, hib, base):
    e = by_task(signal_table(make_rows()))[(task, metric)]
    h = hand_signal(data, hib, base)
    assert e["higher_is_better"] is hib and e["random_baseline"] == base
    assert e["runs"] == 4 and e["runs_for_monotonicity"] == 4 and e["final_tokens"] == [TOKENS[-1]]
    for k in ("monotonicity", "seed_std", "separation"):
        assert e[k] == pytest.approx(h[k], rel=1e-9, abs=1e-12), k
    if base is None:
        assert e["above_random"] is None
    else:
        assert e["above_random"] == pytest.approx(h["above_random"], rel=1e-9)
    assert e["best_variant"] == h["best_variant"]
    assert set(e["variants"]) == {"data=A", "data=B"}
    for v, s in e["variants"].items():
        assert s["n"] == 2
        assert s["mean"] == pytest.approx(h["means"][v]) and s["std"] == pytest.approx(h["stds"][v])


def test_good_task_is_trusted_and_noisy_is_not():
    t = by_task(signal_table(make_rows()))
    good, noisy = t[("good", "acc")], t[("noisy", "bpb")]
    # the literal numbers, so a wrong formula cannot hide behind a wrong reference
    assert good["monotonicity"] == 1.0
    assert good["seed_std"] == pytest.approx(math.sqrt(0.00005))       # both variants: |0.50-0.49| = |0.35-0.36|
    assert good["separation"] == pytest.approx(0.14 / math.sqrt(0.00005))
    assert good["above_random"] == pytest.approx((0.425 - 0.25) / math.sqrt(0.00005))
    assert good["best_variant"] == "data=A"
    assert good["trusted"] is True
    assert noisy["separation"] < MIN_SEPARATION and noisy["monotonicity"] < MIN_MONOTONICITY
    assert noisy["best_variant"] == "data=B"                           # lower bpb is better: B's 1.01 < A's 1.025
    assert noisy["trusted"] is False


def test_lower_is_better_flips_sign_of_above_random_and_monotonicity():
    rows = make_rows()
    flipped = [dict(r, value=-r["value"], random_baseline=-0.25, higher_is_better=False)
               for r in rows if r["task"] == "good"]
    e, = signal_table(flipped)
    g = by_task(signal_table(rows))[("good", "acc")]
    for k in ("monotonicity", "seed_std", "separation", "above_random"):
        assert e[k] == pytest.approx(g[k]), k
    assert e["best_variant"] == "data=A" and e["trusted"] is True
    assert e["variants"]["data=A"]["mean"] == pytest.approx(-0.495)   # table in the metric's own units


def test_short_runs_single_seed_and_flat_scores():
    rows = [r for r in make_rows() if r["task"] == "good" and r["tokens"] <= TOKENS[1]]   # 2 checkpoints
    e, = signal_table(rows)
    assert e["monotonicity"] is None and e["runs_for_monotonicity"] == 0 and e["trusted"] is False
    assert e["final_tokens"] == [TOKENS[1]]
    one_seed = [r for r in make_rows() if r["task"] == "good" and r["seed"] == 0]
    e, = signal_table(one_seed)
    assert e["seed_std"] is None and e["separation"] is None and e["above_random"] is None
    assert e["monotonicity"] == 1.0 and e["trusted"] is False
    flat = [dict(r, value=0.5) for r in make_rows() if r["task"] == "good"]
    e, = signal_table(flat)
    assert e["monotonicity"] == 0.0 and e["seed_std"] == 0.0 and e["separation"] is None and e["trusted"] is False


def test_final_checkpoint_is_per_run_and_checkpoint_order_does_not_matter():
    rows = make_rows()
    # drop the last checkpoint of one A run: its final is now its 3rd checkpoint
    cut = [r for r in rows if not (r["task"] == "good" and r["variant"] == "data=A" and r["seed"] == 1
                                   and r["tokens"] == TOKENS[-1])]
    e = by_task(signal_table(list(reversed(cut))))[("good", "acc")]
    assert e["final_tokens"] == [TOKENS[2], TOKENS[3]]
    assert e["variants"]["data=A"]["mean"] == pytest.approx((0.50 + 0.43) / 2)
    assert e["seed_std"] == pytest.approx(statistics.mean([statistics.stdev([0.50, 0.43]),
                                                           statistics.stdev([0.35, 0.36])]))


# -- read_rows -------------------------------------------------------------------------------------

def test_read_rows_parses_types(tmp_path):
    p = tmp_path / "eval.csv"
    p.write_text(",".join(COLUMNS) + "\n"
                 "c1,r1,0,data=A,3,100,1000000,hellaswag,acc,0.31,0.01,0.25,true\n"
                 "c1,r1,1,data=B,4,200,2000000,wiki,bpb,1.5,,,False\n", encoding="utf-8")
    a, b = read_rows([p])
    assert (a["point"], a["seed"], a["step"], a["tokens"]) == (0, 3, 100, 1_000_000)
    assert isinstance(a["tokens"], int) and a["value"] == 0.31 and a["random_baseline"] == 0.25
    assert a["higher_is_better"] is True and b["higher_is_better"] is False
    assert b["stderr"] is None and b["random_baseline"] is None and b["variant"] == "data=B"
    p.write_text(",".join(COLUMNS) + "\nc,r,0,v,0,1,1,t,m,0.1,,,maybe\n")
    with pytest.raises(ValueError, match="eval.csv:2"):
        read_rows([p])


# -- write_report ----------------------------------------------------------------------------------

class Tables(HTMLParser):
    """{table id: [[cell text]]} and every <img src>."""

    def __init__(self):
        super().__init__()
        self.tables, self.imgs, self.links, self._t, self._cell = {}, [], [], None, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self._t = self.tables.setdefault(a.get("id"), [])
        elif tag == "tr" and self._t is not None:
            self._t.append([])
        elif tag in ("td", "th") and self._t is not None:
            self._cell = ""
        elif tag == "img":
            self.imgs.append(a["src"])
        if tag in ("link", "script", "a") or "href" in a:
            self.links.append(a.get("href") or a.get("src") or tag)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._t[-1].append(self._cell.strip())
            self._cell = None
        elif tag == "table":
            self._t = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def test_write_report(tmp_path):
    rows = make_rows()
    out = tmp_path / "report"
    index = write_report(rows, out, "campaign <c1>")
    assert index == out / "index.html"
    page = index.read_text(encoding="utf-8")
    assert "<title>campaign &lt;c1&gt;</title>" in page
    p = Tables()
    p.feed(page)

    # one PNG per (task, metric), referenced by relative path, real PNG files
    assert len(p.imgs) == 2
    for src in p.imgs:
        assert not src.startswith(("/", "http")) and src.startswith("plots/")
        png = (out / src).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert sorted(f.name for f in (out / "plots").iterdir()) == sorted(s.split("/")[1] for s in p.imgs)
    # offline: nothing outside out_dir
    assert all(not str(h).startswith(("http", "//")) for h in p.links) and "<script" not in page and "<link" not in page
    assert "@import" not in page and "url(" not in page
    # one mean curve per variant in each figure
    for task, metric in (("good", "acc"), ("noisy", "bpb")):
        fig = page.split(f'data-task="{task}" data-metric="{metric}"')[1].split("</figure>")[0]
        assert fig.count('class="curve"') == 2
        assert "data=A (2 seeds)" in fig and "data=B (2 seeds)" in fig

    # the signal table shows signal_table's numbers to 3 significant figures
    table = signal_table(rows)
    head, *body = p.tables["signal"]
    assert head[:2] == ["task", "metric"] and head[-1] == "trusted"
    assert len(body) == len(table)
    for cells, e in zip(body, table):
        assert cells[0] == e["task"] and cells[1].startswith(e["metric"])
        assert cells[2:6] == [fmt(e[k]) for k in ("monotonicity", "seed_std", "separation", "above_random")]
        assert cells[6] == e["best_variant"]
        assert cells[7] == ("✓" if e["trusted"] else "✗")
    assert [c[7] for c in body] == ["✓", "✗"]
    assert body[0][2:6] == ["1.00", "0.00707", "19.8", "24.7"]
    assert body[1][5] == "—"

    # final scores per variant: mean ± std (n)
    head, *body = p.tables["finals"]
    assert head == ["task", "metric", "data=A", "data=B"]
    assert body[0] == ["good", "acc", "0.495 ± 0.00707 (n=2)", "0.355 ± 0.00707 (n=2)"]

    # signal.json is the table; results.csv round-trips through read_rows
    assert json.loads((out / "signal.json").read_text(encoding="utf-8")) == json.loads(json.dumps(table))
    with open(out / "results.csv", newline="") as fh:
        assert next(csv.reader(fh)) == COLUMNS
    back = read_rows([out / "results.csv"])
    assert back == rows
    assert signal_table(back) == table

    # the page explains each criterion
    for word in ("monotonicity", "seed std", "separation", "above random", "best variant"):
        assert f"<dt>{word}</dt>" in page


def test_import_is_light():
    code = ("import sys, launcher.reports.report\n"
            "print(sorted(m for m in ('matplotlib', 'numpy', 'torch') if m in sys.modules))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert p.stdout.strip() == "[]"


def test_write_report_shows_the_cost_per_variant(tmp_path):
    costs = {"data=A": {"tasks": 3, "elapsed_s": 7200.0, "gpu_hours": 4.0, "cpu_hours": 16.0, "cpu_efficiency": 0.5,
                        "mem_efficiency": 0.25, "requeues": 1},
             "data=B": {"tasks": 3, "elapsed_s": 3600.0, "gpu_hours": 2.0, "cpu_hours": 8.0, "cpu_efficiency": None,
                        "mem_efficiency": None, "requeues": 0}}
    index = write_report(make_rows(), tmp_path / "r", "campaign c1", costs=costs)
    p = Tables()
    p.feed(index.read_text(encoding="utf-8"))
    head, *body = p.tables["cost"]
    assert head[0] == "variant" and head[3] == "GPU-hours"
    assert body[0][:4] == ["data=A", "3", "2.00", "4.00"] and body[1][5] == "—"
    assert json.loads((tmp_path / "r" / "cost.json").read_text()) == costs
    without = write_report(make_rows(), tmp_path / "r2", "campaign c1")
    assert "Cost per variant" not in without.read_text(encoding="utf-8")


def _eval_result(run_dir: Path, stage: str, step: int, value: float) -> None:
    out = run_dir / "stages" / stage / "evals" / "0"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"step-{step}.json").write_text(json.dumps({
        "campaign": "", "run_id": run_dir.name, "point": 0, "variant": "all", "seed": 0, "step": step,
        "tokens": step * 100, "metrics": {"demo|clean": {"acc": value, "acc_stderr": 0.01}},
        "tasks": [{"name": "demo|clean", "random_baseline": 0.25, "higher_is_better": True}]}))


def test_report_of_latest_names_the_run_and_keeps_evaluation_stages_apart(tmp_path, capsys):
    """The demo scores the base and the aligned model in two evaluation stages of one run: two curves,
    not one merged 'all'; and `report latest` is titled with the run it resolved to."""
    from launcher.cli import main

    assert main(["plan", "pipeline=smoke", "cluster=local", f"run_root={tmp_path}"]) == 0
    run_dir = next((tmp_path / "plans").iterdir())
    for step, base, aligned in ((10, 0.3, 0.5), (20, 0.35, 0.6)):
        _eval_result(run_dir, "evaluate_base", step, base)
        _eval_result(run_dir, "evaluate_aligned", step, aligned)
    out = tmp_path / "report"
    assert main(["report", str(run_dir), "--out", str(out)]) == 0
    rows = read_rows([out / "results.csv"])
    assert {r["variant"] for r in rows} == {"evaluate_base", "evaluate_aligned"}
    assert sorted(r["value"] for r in rows if r["variant"] == "evaluate_aligned") == [0.5, 0.6]
    html = (out / "index.html").read_text()
    assert f"run {run_dir.name}" in html and "run latest" not in html
