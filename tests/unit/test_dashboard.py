"""`launcher dashboard`'s app (launcher/reports/dashboard.py) through Starlette's test client, over
stand-in views: pages and their JSON endpoints, escaping, 404 for what is not under the run root, the
plots; how the views share one answer between viewers (dashboard_views.py); the verb's errors. The
real server, on a real run, in a real browser: tests/integration/test_dashboard_browser.py."""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from launcher.errors import LauncherError, NotFound


def need(module: str):
    """The module, or a skip saying how to get it; on CI (scripts/setup installed the extras) a failure."""
    try:
        return __import__(module)
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail(f"{module} is missing on CI: scripts/setup installs the `test` and `dashboard` extras")
        pytest.skip(f"{module} is not installed (scripts/setup installs the `dashboard` and `test` extras)")


RUNNING = {"schema": 1, "run": "r1", "path": "/x/r1", "state": "RUNNING", "exit_code": 2, "time": 0.0, "bad_nodes": {},
           "stages": [{"name": "train", "state": "RUNNING", "pending_reasons": {},
                       "tasks": {"total": 1, "completed": 0, "cached": 0, "skipped": 0, "running": 1, "pending": 0,
                                 "failed": 0, "cancelled": 0, "lost": 0, "missing": 0},
                       "array": [{"task": 0, "point": 0, "state": "running", "job": "7_0",
                                  "progress": {"step": 120, "total_steps": 1000, "tokens_per_s": 3100.0, "loss": 2.3456,
                                               "eta_s": 240.0, "age_s": 3.0}}]}]}
ROW = {"run": "r1", "state": "UNFINISHED", "pipeline": "<script>alert(1)</script>", "cluster": "local",
       "campaign": "nightly", "created": 1.7e9, "points": 1, "jobs": 2, "path": "/x/r1"}
SIGNAL = [{"task": "hellaswag", "metric": "acc", "higher_is_better": True, "monotonicity": 0.9, "seed_std": 0.01,
           "separation": 3.0, "above_random": 4.0, "best_variant": "data=A", "trusted": True}]


class FakeViews:
    """What make_app asks of dashboard_views.Views."""

    root = Path("/x")

    def __init__(self):
        self.step = 120

    def runs(self, campaign=None):
        return [ROW] if campaign in (None, "nightly") else []

    def run(self, run_id):
        if run_id != "r1":
            raise NotFound(f"no run {run_id!r} under /x")
        status = json.loads(json.dumps(RUNNING))
        status["stages"][0]["array"][0]["progress"]["step"] = self.step
        return {"meta": {"pipeline": "train", "cluster": "local", "backend": "local", "created": 1.7e9,
                         "overrides": ["model=tiny"], "points": 1, "campaign": "nightly"}, "status": status}

    def campaign(self, name):
        if name != "nightly":
            raise NotFound(f"no run of campaign {name!r} under /x")
        return {"name": name, "runs": ["r1"], "results": 4, "version": "abc", "signal": SIGNAL,
                "costs": {"data=A": {"tasks": 2, "elapsed_s": 7200.0, "gpu_hours": 1.5, "cpu_hours": 3.0,
                                     "cpu_efficiency": 0.5, "mem_efficiency": None, "requeues": 0}}}

    def plot(self, name, index, version):
        if index != 0:
            raise NotFound("no figure")
        return b"\x89PNG\r\n\x1a\nfake"


@pytest.fixture
def client():
    need("starlette")
    need("httpx2")
    from starlette.testclient import TestClient

    from launcher.reports.dashboard import make_app

    views = FakeViews()
    with TestClient(make_app(views, refresh_s=1.5)) as c:
        c.views = views
        yield c


def test_runs_page_lists_the_index_escaped_and_points_at_its_json(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text and "<script>alert" not in page.text
    assert 'data-api="http://testserver/api/runs"' in page.text and 'data-refresh="1.5"' in page.text
    assert 'href="http://testserver/runs/r1"' in page.text and 'href="http://testserver/campaigns/nightly"' in page.text
    data = client.get("/api/runs").json()
    assert data["runs"] == [ROW] and "&lt;script&gt;" in data["html"]["live-runs"]
    assert client.get("/api/runs?campaign=other").json()["runs"] == []
    assert client.get("/static/dashboard.js").status_code == 200


def test_run_page_shows_progress_and_its_json_follows_the_step(client):
    page = client.get("/runs/r1").text
    assert '<td class="step">120 / 1000</td>' in page and "3.1k" in page and "2.35" in page and ">4m<" in page
    client.views.step = 121
    data = client.get("/api/runs/r1")
    assert data.headers["cache-control"] == "no-store"
    body = data.json()
    assert body["status"]["stages"][0]["array"][0]["progress"]["step"] == 121  # status --json's document
    assert '<td class="step">121 / 1000</td>' in body["html"]["live-run"]


def test_what_is_not_under_the_run_root_is_404_with_the_reason(client):
    for url in ("/runs/nope", "/api/runs/nope", "/campaigns/other", "/campaigns/nightly/plots/3.png"):
        r = client.get(url)
        assert r.status_code == 404 and r.text.startswith("no "), (url, r.text)


def test_campaign_page_has_the_reports_tables_and_versioned_plots(client):
    page = client.get("/campaigns/nightly").text
    assert 'id="signal"' in page and "hellaswag" in page and 'id="cost"' in page and "data=A" in page
    assert 'src="http://testserver/campaigns/nightly/plots/0.png?v=abc"' in page
    png = client.get("/campaigns/nightly/plots/0.png?v=abc")
    assert png.headers["content-type"] == "image/png" and png.content.startswith(b"\x89PNG")


def test_views_share_one_answer_per_refresh_period_between_viewers(tmp_path, monkeypatch):
    """Eight viewers at once cost one read of the index; after refresh_s, one more."""
    from launcher.run import runs_db
    from launcher.reports.dashboard_views import Views

    calls = []

    def slow_runs(root, **kw):
        calls.append(kw)
        time.sleep(0.2)
        return [ROW]

    monkeypatch.setattr(runs_db, "runs", slow_runs)
    views = Views(tmp_path, refresh_s=0.5)
    threads = [threading.Thread(target=views.runs) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    time.sleep(0.6)
    assert views.runs() == [ROW] and len(calls) == 2


def test_views_refuse_runs_outside_the_root(tmp_path):
    from launcher.reports.dashboard_views import Views

    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "run.json").write_text("{}")
    views = Views(tmp_path / "root")
    for ref in ("../elsewhere", "latest", "/etc", "r1"):
        with pytest.raises(NotFound):
            views.run(ref)


def test_campaign_curves_are_read_again_only_when_a_result_changes(tmp_path, monkeypatch):
    """The signal table comes from the report's functions; a plot is a PNG of the current results, and a
    version that is not the current one is refused (the page reloads it with the new one)."""
    need("matplotlib")
    from launcher.reports import campaign
    from launcher.reports.dashboard_views import Views

    run = tmp_path / "r1"
    results = run / "stages" / "eval" / "evals" / "0"
    results.mkdir(parents=True)

    def result(step: int, acc: float) -> None:
        (results / f"step-{step}.json").write_text(json.dumps({
            "campaign": "nightly", "run_id": "r1", "point": 0, "variant": "all", "seed": 0, "step": step,
            "tokens": 1000 * step, "tasks": [{"name": "hellaswag", "random_baseline": 0.25}],
            "metrics": {"hellaswag": {"acc": acc, "acc_stderr": 0.01}}}))

    result(10, 0.3)
    views = Views(tmp_path, refresh_s=0.0)
    monkeypatch.setattr(views, "runs", lambda campaign=None: [dict(ROW, path=str(run))])
    monkeypatch.setattr(campaign, "costs", lambda runs, quiet=False: None)
    v1 = views.campaign("nightly")
    assert v1["results"] == 1 and [e["task"] for e in v1["signal"]] == ["hellaswag"] and v1["costs"] is None
    assert views.plot("nightly", 0, v1["version"]).startswith(b"\x89PNG")
    result(20, 0.4)
    v2 = views.campaign("nightly")
    assert v2["results"] == 2 and v2["version"] != v1["version"]
    with pytest.raises(NotFound, match="changed"):
        views.plot("nightly", 0, v1["version"])
    with pytest.raises(NotFound):
        views.campaign("other")


def test_missing_extra_names_what_to_install(monkeypatch):
    import importlib.util

    from launcher.reports import dashboard

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in dashboard.EXTRA else real(name, *a))
    with pytest.raises(LauncherError, match=r"needs starlette and uvicorn \(the `dashboard` extra\).*"
                                            r"slurm-llm-launcher\[dashboard\]"):
        dashboard.require_extra()


def test_a_taken_port_is_an_error_naming_the_option_and_only_loopback_is_private():
    from launcher.reports.dashboard import bind, loopback

    taken = bind("127.0.0.1", 0)
    try:
        with pytest.raises(LauncherError, match=r"cannot listen on 127.0.0.1:\d+.*--port"):
            bind("127.0.0.1", taken.getsockname()[1])
    finally:
        taken.close()
    assert loopback("127.0.0.1") and loopback("::1") and loopback("localhost")
    assert not loopback("0.0.0.0") and not loopback("10.1.2.3")


def test_cli_parses_the_options_and_refuses_a_missing_run_root(tmp_path, capsys):
    need("starlette")
    need("uvicorn")
    from launcher.cli import main

    assert main(["dashboard", "--run-root", str(tmp_path / "none"), "--port", "0"]) == 1
    assert f"no run root {tmp_path / 'none'}" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["dashboard", "--refresh", "0"])
    assert e.value.code == 64 and "expected seconds > 0" in capsys.readouterr().err


def test_a_runs_status_is_asked_at_a_watchers_pace_through_the_shared_answer(tmp_path, monkeypatch):
    """Views.run asks ops.status with a watcher's max_age_s (the run's shared scheduler answer is reused
    while younger): the backend's poll_s, backing off, or --interval exactly."""
    from launcher.run import ops
    from launcher.reports.dashboard_views import Views
    from launcher.run.status import RunStatus

    (tmp_path / "r1").mkdir()
    (tmp_path / "r1" / "run.json").write_text(json.dumps({"backend": "local", "pipeline": "smoke", "campaign": "c"}))
    asked = []

    def status(run, max_age_s=None):
        asked.append(max_age_s)
        return RunStatus(run=run.id, stages={}, path=run.path)

    monkeypatch.setattr(ops, "status", status)
    view = Views(tmp_path, refresh_s=0.0).run("r1")
    assert view["status"]["run"] == "r1" and view["meta"]["campaign"] == "c" and view["meta"]["points"] == 1
    assert asked == [2.0]  # local poll_s
    Views(tmp_path, interval_s=7.0, refresh_s=0.0).run("r1")
    assert asked[-1] == 7.0
