"""`launcher schedule` on the REAL dev cluster's scrontab (Slurm 22.05, ScronParameters=enable).

scrontab fires on minute boundaries, so the cluster test waits for one boundary (<= 60 s) and then
for a slow firing to span the next one (~90 s): about 2.5 minutes in all. The other tests need no
waiting: the wrapper (`python -m launcher.run.schedule fire`) is called directly, and the "not enabled"
error comes from a copy of slurm.conf without ScronParameters (scrontab checks it client-side).
"""
from __future__ import annotations

import fcntl
import json
import os
import secrets
import shlex
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import slurm

from launcher.run import schedule as sched
from launcher.slurm import scrontab
from launcher.slurm.client import client_env


def _wired() -> bool:
    """`launcher schedule` once cli.py registers the verb; `python -m launcher.run.schedule` (same code) before."""
    from launcher import cli

    parser = cli._parser()
    return any("schedule" in (getattr(a, "choices", None) or {}) for a in parser._actions)


PREFIX = [sys.executable, "-m", "launcher", "schedule"] if _wired() else [sys.executable, "-m", "launcher.run.schedule"]


def launcher_schedule(*args: str, cwd: Path, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run([*PREFIX, *args], cwd=cwd, env={**os.environ, **env}, capture_output=True, text=True,
                       timeout=120)
    if check and p.returncode != 0:
        raise AssertionError(f"launcher schedule {shlex.join(args)} exited {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def fire(name: str, sdir: Path, *args: str, notify_url: str | None = None, cwd: Path) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "launcher.run.schedule", "fire", name, "--dir", str(sdir)]
    argv += ["--notify-url", notify_url] if notify_url else []
    return subprocess.run([*argv, "--", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def history(sdir: Path) -> list:
    return sched.read_history(sdir)


class Hook:
    """A webhook receiver on 127.0.0.1: collects the JSON bodies POSTed to it."""

    def __init__(self):
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received.append({"path": self.path, "body": json.loads(body or b"null")})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def wait_for(what: str, predicate, timeout: float, poll: float = 1.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


# ----------------------------------------------------------------------------- no cluster needed

def test_cron_specs_are_checked_as_slurm_2205_parses_them():
    assert sched.validate_cron(" */5  * * *   * ") == "*/5 * * * *"
    assert sched.validate_cron("0 2 * * 1-5") == "0 2 * * 1-5"
    assert sched.validate_cron("@daily") == "@daily"
    assert sched.validate_cron("0 0 1 jan sun") == "0 0 1 jan sun"
    for bad, needle in [("* * * *", "4 field(s), expected 5"), ("60 * * * *", "outside 0-59"),
                        ("*/1 * * * *", "step must be"), ("5-1 * * * *", "backwards"),
                        ("0 0 * jan,feb *", "names only alone"), ("0 0 * * funday", "unknown name"),
                        ("x * * * *", "expected *")]:
        with pytest.raises(sched.LauncherError) as e:
            sched.validate_cron(bad)
        assert needle in str(e.value), (bad, str(e.value))


def test_blocks_are_found_and_other_lines_kept():
    text = "\n".join([
        "# someone's own line", "FOO=bar", "0 0 1 1 * /bin/true",
        *scrontab.render_block("a", "* * * * *", {"dir": "/x/a"}, ["--job-name=launcher-schedule.a"],
                            ["/py", "-m", "launcher.run.schedule", "fire", "a", "--dir", "/x/a", "--", "run",
                             "pipeline.x=a b"]),
        "#DISABLED: # launcher-schedule: b {}",
        "#DISABLED: */5 * * * * exec /py -m launcher.run.schedule fire b --dir /x/b -- --help",
        "# trailing"])
    lines, blocks = scrontab.parse_blocks(text)
    assert set(blocks) == {"a", "b"}
    assert scrontab.launcher_args_of(blocks["a"]["command"]) == ["run", "pipeline.x=a b"]
    assert blocks["a"]["cron"] == "* * * * *" and blocks["a"]["meta"] == {"dir": "/x/a"}
    assert blocks["b"]["disabled"] and blocks["b"]["cron"] == "*/5 * * * *"
    kept = [x for i, x in enumerate(lines) if not any(b["start"] <= i <= b["end"] for b in blocks.values())]
    assert kept == ["# someone's own line", "FOO=bar", "0 0 1 1 * /bin/true", "# trailing"]


def test_fire_records_history_run_id_and_exit_code_and_a_dead_webhook_never_fails_it(tmp_path):
    sdir = tmp_path / "runs" / "schedules" / "f"
    p = fire("f", sdir, "status", "nope", "--root", str(tmp_path / "runs"), notify_url="http://127.0.0.1:9/x",
             cwd=tmp_path)
    assert p.returncode == 66, p.stdout + p.stderr  # no such run
    [h] = history(sdir)
    assert h["status"] == "failed" and h["exit_code"] == 66 and h["notified"] is False and h["run_id"] is None
    assert "could not notify http://127.0.0.1:9/x" in p.stdout and "no run 'nope'" in p.stdout
    assert not (sdir / "running.json").exists()

    hook = Hook()
    try:
        p = fire("f", sdir, "status", "nope", "--root", str(tmp_path / "runs"), notify_url=hook.url, cwd=tmp_path)
        assert p.returncode == 66 and history(sdir)[-1]["notified"] is True
        [post] = hook.received
        assert post["body"]["schedule"] == "f" and post["body"]["exit_code"] == 66
        assert post["body"]["log"] == str(sdir / "scron.log")
    finally:
        hook.close()

    # a real run (cluster=local, tiny): the history line names the run it made
    p = fire("f", sdir, "run", "pipeline=smoke", "cluster=local", f"run_root={tmp_path / 'runs'}", cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    h = history(sdir)[-1]
    assert h["status"] == "ok" and h["run_id"] and (tmp_path / "runs" / h["run_id"] / "run.json").exists()


def test_fire_skips_while_another_firing_holds_the_lock(tmp_path):
    sdir = tmp_path / "schedules" / "busy"
    sdir.mkdir(parents=True)
    (sdir / "running.json").write_text(json.dumps({"job_id": "123", "host": "n1", "start": "then"}))
    fd = os.open(sdir / "lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # a firing in progress
    try:
        p = fire("busy", sdir, "--help", cwd=tmp_path)
    finally:
        os.close(fd)
    assert p.returncode == 0
    assert "previous firing still running (Slurm job 123 on n1, since then): skipping this tick" in p.stdout
    assert "usage: launcher" not in p.stdout  # the launcher did not run
    [h] = history(sdir)
    assert h["status"] == "skipped" and h["exit_code"] is None


# ----------------------------------------------------------------------------- on the dev cluster

@pytest.mark.slurm
def test_clear_errors(tmp_path, dev_slurm):
    env = dict(dev_slurm)
    p = launcher_schedule("x", "--cron", "* * * *", "--cluster", "dev", "--", "--help", cwd=tmp_path, env=env,
                          check=False)
    assert p.returncode != 0 and "invalid --cron '* * * *': 4 field(s), expected 5" in p.stderr
    p = launcher_schedule("--remove", f"no-such-{secrets.token_hex(3)}", cwd=tmp_path, env=env, check=False)
    assert p.returncode == 66 and "no schedule 'no-such-" in p.stderr and "in your scrontab" in p.stderr
    p = launcher_schedule("bad name", "--cron", "* * * * *", "--", "--help", cwd=tmp_path, env=env, check=False)
    assert p.returncode == 1 and "invalid schedule name" in p.stderr
    # scrontab itself refuses when slurm.conf lacks ScronParameters=enable: say how to enable it
    conf = Path(dev_slurm["SLURM_CONF"]).read_text()
    off = tmp_path / "slurm.conf"
    off.write_text("".join(x for x in conf.splitlines(True) if not x.startswith("ScronParameters")))
    p = launcher_schedule("x", "--cron", "* * * * *", "--cluster", "dev", "--root", str(tmp_path / "runs"), "--",
                          "--help", cwd=tmp_path, env={"SLURM_CONF": str(off)}, check=False)
    assert p.returncode == 1 and "scrontab is not enabled on this cluster" in p.stderr
    assert "ScronParameters=enable" in p.stderr and not (tmp_path / "runs").exists()


@pytest.mark.slurm
def test_scancel_disables_an_entry_and_reinstalling_enables_it(tmp_path, dev_slurm):
    """Slurm 22.05: `scancel` of a scrontab job comments its lines out (#DISABLED:) for good."""
    env, name = dict(dev_slurm), f"t{secrets.token_hex(3)}-yearly"
    install = [name, "--cron", "0 0 1 1 *", "--cluster", "dev", "--root", str(tmp_path / "runs"), "--", "--help"]

    def row():
        rows = json.loads(launcher_schedule("--list", "--json", cwd=tmp_path, env=env).stdout)
        return next(r for r in rows if r["name"] == name)

    try:
        launcher_schedule(*install, cwd=tmp_path, env=env)
        assert row()["state"] == "scheduled" and row()["next"].endswith("01-01T00:00:00")
        [job] = slurm(env, "squeue", "-h", "-n", sched.JOB_PREFIX + name, "-o", "%i").split()
        slurm(env, "scancel", job)
        assert wait_for("the entry to be disabled", lambda: row()["state"] == "disabled", timeout=20)
        assert "replaced" in launcher_schedule(*install, cwd=tmp_path, env=env).stdout
        assert row()["state"] == "scheduled"
    finally:
        launcher_schedule("--remove", name, cwd=tmp_path, env=env, check=False)


@pytest.mark.slurm
@pytest.mark.slow
def test_scrontab_entries_fire_never_overlap_notify_and_are_removed_alone(tmp_path, dev_slurm):
    env = dict(dev_slurm)
    tag = secrets.token_hex(3)
    quick, failing, slow = f"t{tag}-quick", f"t{tag}-fail", f"t{tag}-slow"
    runs, slow_runs = tmp_path / "runs", tmp_path / "slow-runs"
    unrelated = ["# an unrelated line of the user's own (test_schedule " + tag + ")",
                 f"#SCRON --job-name=unrelated-{tag} --time=1",
                 f"0 0 1 1 * /bin/true unrelated-{tag}"]
    senv = client_env(dev_slurm["SLURM_CONF"])
    senv["SLURM_CONF"] = dev_slurm["SLURM_CONF"]
    hook = Hook()

    def crontab() -> str:
        return scrontab.read_crontab(senv)

    def jobs(name: str) -> list:
        out = slurm(env, "squeue", "-h", "-n", sched.JOB_PREFIX + name, "-o", "%i|%T")
        return sorted(tuple(x.split("|")) for x in out.splitlines())

    try:
        with scrontab.crontab_lock():  # plant the user's own entry first
            text = crontab()
            scrontab.write_crontab(text + ("\n" if text and not text.endswith("\n") else "") + "\n".join(unrelated) + "\n",
                                senv)
        common = ["--cluster", "dev", "--time", "00:05:00"]
        t_install = time.time()
        out = launcher_schedule(quick, "--cron", "* * * * *", *common, "--", "run", "pipeline=smoke", "cluster=dev",
                                f"run_root={runs}", cwd=tmp_path, env=env).stdout
        assert f"schedule {quick} installed: '* * * * *' -> launcher run pipeline=smoke cluster=dev" in out
        launcher_schedule(failing, "--cron", "* * * * *", *common, "--root", str(runs), "--notify-url", hook.url,
                          "--", "status", "no-such-run", "--root", str(runs), cwd=tmp_path, env=env)
        # ~90 s: the smoke pipeline, waited for, with a fanout stage that sleeps 75 s
        slow_args = ["run", "pipeline=smoke", "cluster=dev", f"run_root={slow_runs}", "wait=true", "poll_s=2",
                     "pipeline.stages.fanout.command='sleep 75'"]
        launcher_schedule(slow, "--cron", "* * * * *", *common, "--", *slow_args, cwd=tmp_path, env=env)

        text = crontab()
        for line in unrelated:
            assert line in text.splitlines()
        _, blocks = scrontab.parse_blocks(text)
        assert {quick, failing, slow} <= set(blocks)
        assert f"#SCRON --job-name={sched.JOB_PREFIX}{quick}" in text
        assert f"#SCRON --output={runs}/schedules/{quick}/scron.log" in text
        assert f"SLURM_CONF={dev_slurm['SLURM_CONF']} exec {sys.executable} -m launcher.run.schedule fire {quick}" in text

        # --- the first minute boundary: every entry fires
        qdir, fdir, sdir = runs / "schedules" / quick, runs / "schedules" / failing, slow_runs / "schedules" / slow
        wait_for("the first firings", lambda: history(qdir) and history(fdir) and (sdir / "running.json").exists(),
                 timeout=100)
        t_fired = time.time()
        print(f"first firing {t_fired - t_install:.0f} s after install")
        [q] = history(qdir)
        assert q["status"] == "ok" and q["exit_code"] == 0 and q["job_id"]
        assert q["run_id"] and (runs / q["run_id"] / "run.json").exists()  # the run directory it made
        f = history(fdir)[0]
        assert f["status"] == "failed" and f["exit_code"] == 66 and f["notified"] is True
        post = wait_for("the webhook POST", lambda: hook.received, timeout=15)[0]["body"]
        assert post["schedule"] == failing and post["exit_code"] == 66 and post["log"] == str(fdir / "scron.log")
        assert "no run 'no-such-run'" in (fdir / "scron.log").read_text()

        # Slurm itself: an entry is ONE job, requeued only when it ends, so no second one while it runs
        running = jobs(slow)
        assert [s for _, s in running] == ["RUNNING"], running

        # ... until the scrontab is rewritten (any entry, any tool): the running firing becomes a plain job
        # and the entry gets a NEW job for the next minute, which would overlap it. The wrapper's lock skips it.
        out = launcher_schedule(slow, "--cron", "* * * * *", *common, "--", *slow_args, cwd=tmp_path, env=env).stdout
        assert f"schedule {slow} replaced" in out
        after = jobs(slow)
        assert sorted(s for _, s in after) == ["PENDING", "RUNNING"], after
        hist = wait_for("the slow firing to end", lambda: [h for h in history(sdir) if h["status"] != "skipped"],
                        timeout=150, poll=2)
        skipped = [h for h in history(sdir) if h["status"] == "skipped"]
        [first] = hist
        assert first["status"] == "ok" and first["duration_s"] > 60, first
        assert skipped, history(sdir)
        for s in skipped:  # the next minute's job came, found the lock held, and did not run the launcher
            assert first["start_ts"] < s["start_ts"] < first["end_ts"], (first, s)
            assert s["job_id"] != first["job_id"] and f"Slurm job {first['job_id']}" in s["reason"]
        log = (sdir / "scron.log").read_text()
        assert log.count("$ cd ") == 1 and "skipping this tick" in log

        # --- --list: name, cron, command, last fire, last exit
        rows = {r["name"]: r for r in json.loads(launcher_schedule("--list", "--json", cwd=tmp_path, env=env).stdout)}
        assert rows[quick]["last_exit"] == 0 and rows[quick]["cron"] == "* * * * *"
        assert rows[quick]["command"] == f"launcher run pipeline=smoke cluster=dev run_root={runs}"
        assert rows[failing]["last_exit"] == 66 and rows[failing]["last_status"] == "failed"
        assert rows[slow]["last_exit"] == 0 and rows[slow]["skipped"] >= 1
        table = launcher_schedule("--list", cwd=tmp_path, env=env).stdout  # piped: plain, tab-separated
        assert table.splitlines()[0].split("\t") == ["name", "cron", "command", "last fire", "last exit", "state",
                                                     "next"]
        line = next(x for x in table.splitlines() if x.startswith(failing + "\t"))
        assert "* * * * *" in line and "launcher status no-such-run" in line and "66 (failed)" in line

        # --- --remove: that entry only
        before = crontab().splitlines()
        launcher_schedule("--remove", quick, cwd=tmp_path, env=env)
        after_lines = crontab().splitlines()
        _, blocks = scrontab.parse_blocks("\n".join(after_lines))
        assert quick not in blocks and {failing, slow} <= set(blocks)
        b = scrontab.parse_blocks("\n".join(before))[1][quick]
        assert after_lines == [x for i, x in enumerate(before) if not b["start"] <= i <= b["end"]
                               and not (i == b["start"] - 1 and not x.strip())]
        for line in unrelated:
            assert line in after_lines
        wait_for(f"{quick}'s job to leave the queue", lambda: all(s != "PENDING" for _, s in jobs(quick)), timeout=20)
    finally:
        hook.close()
        with scrontab.crontab_lock():
            lines, blocks = scrontab.parse_blocks(crontab())
            drop = {i for n, b in blocks.items() if n.startswith(f"t{tag}-") for i in range(b["start"], b["end"] + 1)}
            keep = [x for i, x in enumerate(lines) if i not in drop and x not in unrelated]
            while keep and not keep[-1].strip():
                keep.pop()
            scrontab.write_crontab("\n".join(keep) + "\n" if any(x.strip() for x in keep) else "", senv)
        # firings still running (and the runs they submitted) are this test's: cancel them
        ids = [i for n in (quick, failing, slow) for i, _ in jobs(n)]
        for d in (runs, slow_runs):
            for ledger in d.glob("*/submissions.jsonl"):
                ids += [json.loads(x)["job_id"] for x in ledger.read_text().splitlines() if '"job_id"' in x]
        if ids:
            subprocess.run(["scancel", *ids], env={**os.environ, **env}, capture_output=True, timeout=60)
