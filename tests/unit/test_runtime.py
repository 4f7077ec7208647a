"""The node side's leaf helpers (jobs/runtime/): process trees, polling, JSONL, HTTP, ports."""
from __future__ import annotations

import http.server
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from jobs import layout
from jobs.runtime import http as jhttp
from jobs.runtime import jsonl, polling, processes
from jobs.runtime.ports import free_port, rdzv_port

# A process tree: a leader and one child, both ignoring SIGTERM when told "stubborn"; prints the child's pid.
TREE = """
import subprocess, sys, time, signal
signal.signal(signal.SIGTERM, signal.SIG_IGN) if sys.argv[1] == 'stubborn' else None
child = subprocess.Popen([sys.executable, '-c', 'import time, signal; signal.signal(signal.SIGTERM, signal.SIG_IGN) if %r == "stubborn" else None; time.sleep(600)' % sys.argv[1]])
print(child.pid, flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("kind", ["polite", "stubborn"])
def test_stopping_a_tree_leaves_no_process_of_its_session(kind):
    """A stubborn tree (SIGTERM ignored by leader and child) is SIGKILLed after the grace."""
    proc = processes.start([sys.executable, "-c", TREE, kind], stdout=subprocess.PIPE, text=True, die_with_parent=True)
    child = int(proc.stdout.readline())
    assert processes.session_alive(proc.pid) and child in processes.session_pids(proc.pid)
    said = []
    t0 = time.time()
    assert processes.stop(proc, grace=2, log=said.append, what="the tree")
    took = time.time() - t0
    assert not processes.session_alive(proc.pid) and processes.session_pids(proc.pid) == []
    state = Path(f"/proc/{child}/stat")
    assert not state.exists() or state.read_text().rsplit(")", 1)[1].split()[0] == "Z"  # gone (or a zombie)
    if kind == "polite":
        assert took < 1.5 and said == []
    else:
        assert 2 <= took < 6 and said == ["the tree did not stop within 2 s of SIGTERM: SIGKILL"]


def test_a_child_in_its_own_session_gets_only_the_signals_sent_to_its_group():
    proc = processes.start([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert os.getsid(proc.pid) == proc.pid != os.getsid(0)
        assert processes.signal_tree(proc, signal.SIGTERM)
        assert proc.wait(timeout=5) == -signal.SIGTERM
        assert not processes.signal_tree(proc, signal.SIGTERM)  # exited: nothing to signal
    finally:
        processes.kill(proc)


PARENT = """
import sys, time
from jobs.runtime import processes
p = processes.start([sys.executable, "-c", "import time; time.sleep(600)"], die_with_parent=True)
print(p.pid, flush=True)
time.sleep(600)
"""


def test_a_child_started_to_die_with_its_parent_does_when_the_parent_is_killed():
    root = Path(__file__).resolve().parents[2]
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(root)})
    child = int(parent.stdout.readline())
    os.kill(child, 0)
    parent.kill()
    parent.wait()
    assert polling.until(lambda: not processes.session_alive(child), 5, 0.05)  # PR_SET_PDEATHSIG: SIGTERM


def test_polling_returns_the_first_truthy_answer_or_none_at_the_deadline():
    answers = iter([None, 0, "ready"])
    assert polling.until(lambda: next(answers), 5, 0.01) == "ready"
    t0 = time.monotonic()
    calls = []
    assert polling.until(lambda: calls.append(1), 0.3, 0.05) is None
    assert 0.3 <= time.monotonic() - t0 < 1 and len(calls) >= 5  # checked along the way and at the deadline
    assert polling.until(lambda: calls.append(1), 0, 1) is None and calls  # a zero timeout checks once


def test_polling_never_sleeps_past_the_deadline():
    now = [0.0]
    slept = []

    def sleep(s):
        slept.append(s)
        now[0] += s

    assert polling.until(lambda: None, 2.5, 1, clock=lambda: now[0], sleep=sleep) is None
    assert slept == [1, 1, 0.5]


def test_polling_lets_a_check_end_the_wait_with_an_error():
    def check():
        raise RuntimeError("never")

    with pytest.raises(RuntimeError, match="never"):
        polling.until(check, 10, 0.01)


def test_jsonl_skips_a_torn_last_line_and_appends_on_a_fresh_one(tmp_path):
    path = tmp_path / "ledger.jsonl"
    assert jsonl.read(path) == []
    jsonl.append(path, {"job_id": "1"})
    with open(path, "a") as f:
        f.write('{"job_id": "2", "sta')  # a writer killed mid-line
    assert jsonl.read(path) == [{"job_id": "1"}]
    jsonl.append(path, {"job_id": "3"}, fsync=True)
    assert path.read_text().splitlines()[-1] == '{"job_id": "3"}'  # not glued to the torn line
    assert jsonl.read(path) == [{"job_id": "1"}, {"job_id": "3"}]


def test_a_torn_ledger_line_does_not_break_a_task_waiting_on_another(tmp_path, monkeypatch):
    """layout.task_ended (a server waiting for its clients) reads the ledger a launcher may be appending to."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    squeue = bin_dir / "squeue"
    squeue.write_text('#!/bin/sh\necho 12_0\n')
    squeue.chmod(squeue.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "submissions.jsonl").write_text(json.dumps({"stage": "client", "job_id": "12", "tasks": [0, 1]})
                                               + '\n{"stage": "client", "job_id": "13", "tas')
    assert not layout.task_ended(run_dir, "client", "h", 0, "slurm")  # 12_0 is queued
    assert layout.task_ended(run_dir, "client", "h", 1, "slurm")  # 12_1 is not


class Handler(http.server.BaseHTTPRequestHandler):
    answers: list = []
    posts: list = []

    def do_GET(self):
        code = self.answers.pop(0) if self.answers else 200
        self.send_response(code)
        self.end_headers()
        self.wfile.write(json.dumps({"code": code}).encode())

    def do_POST(self):
        self.posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(503)
        self.end_headers()
        self.wfile.write(b"busy")

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    Handler.answers, Handler.posts = [], []
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_http_retries_reads_only(server):
    Handler.answers = [503, 502]
    assert jhttp.get_json(server + "/health", retries=2, backoff_s=0.01) == (200, {"code": 200})
    Handler.answers = [503, 503]
    assert jhttp.get_json(server + "/health", retries=1, backoff_s=0.01) == (503, {"code": 503})
    assert jhttp.post_json(server + "/v1/completions", {"prompt": "x"}) == (503, "busy")
    assert Handler.posts == [{"prompt": "x"}]  # sent once: a POST is never retried


def test_http_says_0_when_nothing_answers():
    port = free_port("1", 41000)  # nothing listens there
    assert jhttp.get_json(f"http://127.0.0.1:{port}/health", timeout=2) == (0, None)


def test_rdzv_port_follows_the_job_id():
    assert rdzv_port("123456", 20000) == 23456 and rdzv_port("17_3", 20000) == 20173
    with pytest.raises(ValueError):
        rdzv_port("local", 20000)
