"""`launcher dashboard` in a real headless browser (Debian's Chromium, driven by Playwright), against a
run on cluster=local whose stage is running: the page shows the task's step from its progress file,
follows it when the step advances (polling its JSON endpoint, without a reload), and logs no console
error; the runs list loads clean too, and the campaign page with the curve of an evaluation's result
files. Screenshots are kept as artifacts (their paths are printed; $DASHBOARD_ARTIFACTS moves them out
of pytest's tmp dir).

The progress file is written by the real writer (jobs/runtime/progress.py ProgressWriter) for the
running task: the training's own writers are tested in test_usage_and_progress.py."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import stage_counts, wait_for

from jobs import layout
from jobs.runtime.progress import ProgressWriter

CHROMIUM = "/usr/bin/chromium"
# Chromium's own background traffic off: the page's requests are the only ones (no network here anyway).
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def _browser_or_skip():
    """Playwright's sync API, with Debian's chromium. Skipped (saying why) only where it cannot be had:
    no apt-get to install chromium; on CI (scripts/setup installs both) a missing one fails."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        why = "playwright is not installed (scripts/setup installs the `test` extra)"
        pytest.fail(why) if os.environ.get("CI") else pytest.skip(why)
    if not os.access(CHROMIUM, os.X_OK):
        if shutil.which("apt-get") and not os.environ.get("CI"):
            pytest.skip(f"no {CHROMIUM}: scripts/setup installs it (apt-get install chromium, as root)")
        elif os.environ.get("CI"):
            pytest.fail(f"no {CHROMIUM} on CI: scripts/setup should have installed Debian's chromium")
        pytest.skip(f"no {CHROMIUM} and no apt-get to install it")
    return sync_playwright


def _results(run: Path, steps) -> None:
    """Result files as a kind=evaluate stage writes them (jobs/adapters/eval_results.py reads them)."""
    folder = run / "stages" / "eval" / "evals" / "0"
    folder.mkdir(parents=True)
    for step in steps:
        (folder / f"step-{step}.json").write_text(json.dumps({
            "campaign": run.name, "run_id": run.name, "point": 0, "variant": "all", "seed": 0, "step": step,
            "tokens": 4096 * step, "tasks": [{"name": "hellaswag", "random_baseline": 0.25}],
            "metrics": {"hellaswag": {"acc": 0.25 + step / 200, "acc_stderr": 0.01}}}))


@pytest.fixture
def dashboard(cli):
    """`launcher dashboard --port 0` on the test's run root: (its URL, the process)."""
    proc = subprocess.Popen([sys.executable, "-m", "launcher", "dashboard", "--port", "0", "--refresh", "0.5"],
                            cwd=cli.run_root, env=cli.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # "dashboard of <root> at http://127.0.0.1:<port>/ (...)"
        assert " at http://127.0.0.1:" in line, (line, proc.poll() is not None and proc.stderr.read())
        yield line.split(" at ")[1].split()[0], proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_dashboard_follows_a_running_trainings_step_in_a_headless_browser(cli, dashboard, tmp_path, record_property):
    sync_playwright = _browser_or_skip()
    ck = "pipeline.stages.checkpointing.params"  # a task that runs ~5 minutes unless cancelled
    cli("run", "pipeline=smoke", "cluster=local", f"{ck}.step_s=1", f"{ck}.force_requeue_at=null", f"{ck}.target=300")
    wait_for(lambda: stage_counts(cli.status())["checkpointing"]["running"] == 1, 90, "the stage to run", poll=0.3)
    run = cli.run_dir()
    writer = ProgressWriter(layout.progress_path(run, "checkpointing", 0))
    writer.update(force=True, step=7, total_steps=300, tokens=7 * 4096, tokens_per_s=2048.0, loss=3.25)
    url, server = dashboard
    errors: list = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.on("response", lambda r: errors.append(f"HTTP {r.status} {r.url}") if r.status >= 400 else None)

            page.goto(url)
            page.click(f"a:text('{run.name}')")  # the runs list (the runs index) links the run's page
            step = page.locator('tr.task[data-stage="checkpointing"][data-task="0"] td.step')
            step.wait_for(timeout=15_000)
            assert step.inner_text() == "7 / 300"
            assert page.locator("#run-state").inner_text() == "RUNNING"
            page.evaluate("window.notReloaded = true")

            writer.update(force=True, step=42, loss=2.5)
            t0 = time.monotonic()
            page.wait_for_function(
                "() => document.querySelector('tr.task[data-stage=\"checkpointing\"] td.step')?.textContent === '42 / 300'",
                timeout=15_000)
            seen_after = time.monotonic() - t0
            assert page.evaluate("window.notReloaded === true"), "the page was reloaded instead of updated"
            assert page.locator('tr.task[data-stage="checkpointing"] td.loss').inner_text() == "2.50"
            shot = Path(os.environ.get("DASHBOARD_ARTIFACTS") or tmp_path) / "dashboard-run.png"
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot), full_page=True)

            _results(run, steps=(10, 20, 30))  # an evaluation's result files: the campaign page plots them
            page.click('a[href*="/campaigns/"]')  # its campaign page (signal table, costs, curves)
            curve = page.locator("#live-campaign figure img")
            curve.wait_for(timeout=15_000)
            page.wait_for_function("() => document.querySelector('#live-campaign figure img').naturalWidth > 0",
                                   timeout=15_000)
            assert page.locator("#signal").inner_text().count("hellaswag") == 1
            page.wait_for_timeout(1500)  # a few polls of the campaign's JSON
            page.screenshot(path=str(shot.with_name("dashboard-campaign.png")), full_page=True)
            browser.close()
    finally:
        cli("cancel", "latest", check=False)
    print(f"\ndashboard screenshots: {shot}, {shot.with_name('dashboard-campaign.png')} (the step was on the page {seen_after:.1f} s after it was written)")
    record_property("screenshot", str(shot))
    assert shot.stat().st_size > 10_000
    assert errors == [], errors
    assert server.poll() is None, "the dashboard exited"
