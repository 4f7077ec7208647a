"""jobs/kinds/serve.py without vLLM: the port choice, stopping a server's whole process tree, the client's
wait for an endpoint (and its cancellation when the server failed), and when a server may stop."""
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from jobs import layout
from jobs.kinds import serve
from jobs.context import Cancel, TaskContext
from launcher.endpoints import endpoints


def test_the_port_follows_the_job_id_and_skips_a_taken_one():
    base = 30000
    first = serve.free_port("4242", base)
    assert first == base + 4242
    with socket.socket() as s:
        s.bind(("0.0.0.0", first))
        s.listen()
        assert serve.free_port("4242", base) == first + 1
    assert serve.free_port("4243", base) != serve.free_port("4242", base) - 5  # different jobs, different ports


def test_server_argv_has_the_model_name_port_and_tensor_parallel():
    argv = serve.server_argv("/py", {"tensor_parallel": 2, "dtype": "auto", "max_model_len": 512, "args": ["--seed", 1]},
                             "/m", 30001, "chat")
    assert argv[:3] == ["/py", "-m", "vllm.entrypoints.openai.api_server"]
    joined = " ".join(argv)
    assert "--model /m --served-model-name chat" in joined and "--port 30001" in joined
    assert "--tensor-parallel-size 2" in joined and "--max-model-len 512" in joined and joined.endswith("--seed 1")
    assert "--enforce-eager" in joined  # no GPUs: no torch.compile at start
    assert "--enforce-eager" not in " ".join(serve.server_argv("/py", {"tensor_parallel": 1, "dtype": "auto"}, "/m", 1,
                                                               "c", gpus=8))


TREE = """
import subprocess, sys, time, signal
signal.signal(signal.SIGTERM, signal.SIG_IGN) if sys.argv[1] == 'stubborn' else None
child = subprocess.Popen([sys.executable, '-c', 'import time, signal; signal.signal(signal.SIGTERM, signal.SIG_IGN) if %r == "stubborn" else None; time.sleep(600)' % sys.argv[1]])
print(child.pid, flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("kind", ["polite", "stubborn"])
def test_stopping_a_server_leaves_no_process_of_it(kind, monkeypatch):
    monkeypatch.setattr(serve, "STOP_GRACE_S", 2)
    proc = subprocess.Popen([sys.executable, "-c", TREE, kind], stdout=subprocess.PIPE, text=True,
                            preexec_fn=serve._own_session_dying_with_parent)
    child = int(proc.stdout.readline())
    assert serve.session_alive(proc.pid)
    t0 = time.time()
    assert serve.stop_server(proc, log=lambda m: None)
    assert not serve.session_alive(proc.pid)
    assert child not in serve.session_pids(proc.pid) and serve.session_pids(proc.pid) == []
    assert time.time() - t0 < (1.5 if kind == "polite" else 6)


def _client(tmp_path, backend="local"):
    spec = {"run_dir": str(tmp_path), "backend": backend, "servers": {"srv": {"hash": "h1", "ready_timeout_s": 5}}}
    ctx = TaskContext(run_dir=tmp_path, run_id="r", stage="c", task=0, index=0, num_tasks=1, point=0, params={},
                      output_dir=tmp_path / "o", checkpoint_dir=tmp_path / "k", inputs={}, restart_count=0)
    return SimpleNamespace(spec=spec, run_dir=tmp_path, point=0, ctx=ctx)


def test_a_client_gets_the_endpoint_once_it_is_ready(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    task = _client(tmp_path)
    ep = layout.endpoint_file(tmp_path, "srv", 0)
    layout.atomic_write_json(ep, {"state": "starting", "host": "n1", "port": 30001})

    def publish():
        time.sleep(1.5)
        layout.atomic_write_json(ep, {"state": "ready", "url": "http://n1:30001/v1", "model": "chat"})

    threading.Thread(target=publish).start()
    t0 = time.time()
    serve.wait_for_servers(task)
    assert time.time() - t0 >= 1.4  # it waited for "ready", not for the file
    import os
    assert os.environ["LAUNCHER_ENDPOINT_SRV"] == "http://n1:30001/v1" == os.environ["OPENAI_BASE_URL"]
    assert os.environ["LAUNCHER_ENDPOINT_SRV_MODEL"] == "chat"
    for k in ("LAUNCHER_ENDPOINT_SRV", "LAUNCHER_ENDPOINT_SRV_MODEL", "OPENAI_API_KEY"):
        monkeypatch.delenv(k, raising=False)


def test_a_client_of_a_server_that_failed_cancels_itself(tmp_path):
    task = _client(tmp_path)
    ep = layout.endpoint_file(tmp_path, "srv", 0)

    def fail():
        time.sleep(1)
        layout.atomic_write_json(ep, {"state": "failed", "stopped": time.time()})

    threading.Thread(target=fail).start()
    with pytest.raises(Cancel, match="server srv failed before it was ready"):
        serve.wait_for_servers(task)


def test_a_client_ignores_the_end_of_an_earlier_server_attempt(tmp_path, monkeypatch):
    """resume resubmits a stopped server with its client: the old 'stopped' must not end the client."""
    monkeypatch.setattr(serve, "STALE_END_S", 3)
    for k in ("LAUNCHER_ENDPOINT_SRV", "LAUNCHER_ENDPOINT_SRV_MODEL", "OPENAI_BASE_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(k, raising=False)
    task = _client(tmp_path)
    ep = layout.endpoint_file(tmp_path, "srv", 0)
    layout.atomic_write_json(ep, {"state": "stopped", "stopped": time.time() - 100, "reason": "clients ended"})

    def restart():
        time.sleep(1)
        layout.atomic_write_json(ep, {"state": "ready", "url": "http://n1:1/v1", "model": "m"})

    threading.Thread(target=restart).start()
    serve.wait_for_servers(task)  # got the new attempt's endpoint
    layout.atomic_write_json(ep, {"state": "stopped", "stopped": time.time() - 100, "reason": "clients ended"})
    with pytest.raises(RuntimeError, match="stopped"):  # nothing replaced it
        serve.wait_for_servers(task)


def test_a_server_stops_when_all_its_clients_of_the_point_ended(tmp_path):
    task = SimpleNamespace(spec={"backend": "local", "clients": {"c": {"hash": "h", "tasks_per_point": 2}}},
                           run_dir=tmp_path, point=1)
    asked = [0.0]
    layout.atomic_write_json(layout.marker_path(tmp_path, "c", "h", 2), {})
    assert not serve.clients_ended(task, asked)  # task 3 (point 1's second) still runs
    layout.atomic_write_json(layout.marker_path(tmp_path, "c", "h", 3, "failed"), {})
    assert serve.clients_ended(task, asked)
    assert not serve.clients_ended(SimpleNamespace(spec={"backend": "local"}, run_dir=tmp_path, point=0), asked)


def test_endpoints_lists_what_servers_published(tmp_path):
    layout.atomic_write_json(layout.endpoint_file(tmp_path, "srv", 0),
                             {"state": "ready", "url": "http://127.0.0.1:9/v1", "model": "m", "host": "h", "port": 9})
    layout.atomic_write_json(layout.endpoint_file(tmp_path, "other", 1), {"state": "stopped", "host": "h", "port": 8})
    rows = {(r["stage"], r["point"]): r for r in endpoints(Path(tmp_path))}
    assert rows[("srv", 0)]["state"] == "unreachable"  # says ready, nothing answers on port 9
    assert rows[("other", 1)]["state"] == "stopped"


def test_resume_resubmits_the_server_of_a_resubmitted_client():
    from launcher.compose import compose, sweep_points
    from launcher.ops import with_servers
    from launcher.plan import build_plan

    points = sweep_points(["pipeline=serve", "cluster=local", "pipeline.vars.model=/m"], False)
    plan = build_plan([compose(p) for p in points], points)
    states = {"serve": {0: "completed"}, "smoke": {0: "failed"}, "report": {0: "cancelled"}}
    todo = with_servers(plan, {"serve": [], "smoke": [0], "report": [0]}, states)
    assert todo == {"serve": [0], "smoke": [0], "report": [0]}
    assert with_servers(plan, {"serve": [], "smoke": [], "report": [0]}, states)["serve"] == []
