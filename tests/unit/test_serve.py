"""kind=serve without vLLM: the port choice (jobs/runtime/ports.py), the server's command line
(jobs/adapters/vllm.py), the client's wait for an endpoint and its cancellation when the server failed
(jobs/runtime/endpoints.py), and when a server may stop (jobs/kinds/serve.py). Stopping a server's whole
process tree: tests/unit/test_runtime.py (jobs/runtime/processes.py)."""
import socket
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from jobs import layout
from jobs.adapters import vllm
from jobs.context import Cancel, TaskContext
from jobs.kinds import serve
from jobs.runtime import endpoints as client_side
from jobs.runtime.ports import free_port
from launcher.run.endpoints import endpoints


def test_the_port_follows_the_job_id_and_skips_a_taken_one():
    base = 30000
    first = free_port("4242", base)
    assert first == base + 4242
    with socket.socket() as s:
        s.bind(("0.0.0.0", first))
        s.listen()
        assert free_port("4242", base) == first + 1
    assert free_port("4243", base) != free_port("4242", base) - 5  # different jobs, different ports


def test_server_argv_has_the_model_name_port_and_tensor_parallel():
    argv = vllm.server_argv("/py", {"tensor_parallel": 2, "dtype": "auto", "max_model_len": 512, "args": ["--seed", 1]},
                            "/m", 30001, "chat")
    assert argv[:3] == ["/py", "-m", "vllm.entrypoints.openai.api_server"]
    joined = " ".join(argv)
    assert "--model /m --served-model-name chat" in joined and "--port 30001" in joined
    assert "--tensor-parallel-size 2" in joined and "--max-model-len 512" in joined and joined.endswith("--seed 1")
    assert "--enforce-eager" in joined  # no GPUs: no torch.compile at start
    assert "--enforce-eager" not in " ".join(vllm.server_argv("/py", {"tensor_parallel": 1, "dtype": "auto"}, "/m", 1,
                                                              "c", gpus=8))


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
    client_side.wait_for_servers(task)
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
        client_side.wait_for_servers(task)


def test_a_client_ignores_the_end_of_an_earlier_server_attempt(tmp_path, monkeypatch):
    """resume resubmits a stopped server with its client: the old 'stopped' must not end the client."""
    monkeypatch.setattr(client_side, "STALE_END_S", 3)
    for k in ("LAUNCHER_ENDPOINT_SRV", "LAUNCHER_ENDPOINT_SRV_MODEL", "OPENAI_BASE_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(k, raising=False)
    task = _client(tmp_path)
    ep = layout.endpoint_file(tmp_path, "srv", 0)
    layout.atomic_write_json(ep, {"state": "stopped", "stopped": time.time() - 100, "reason": "clients ended"})

    def restart():
        time.sleep(1)
        layout.atomic_write_json(ep, {"state": "ready", "url": "http://n1:1/v1", "model": "m"})

    threading.Thread(target=restart).start()
    client_side.wait_for_servers(task)  # got the new attempt's endpoint
    layout.atomic_write_json(ep, {"state": "stopped", "stopped": time.time() - 100, "reason": "clients ended"})
    with pytest.raises(RuntimeError, match="stopped"):  # nothing replaced it
        client_side.wait_for_servers(task)


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
    from launcher.config.compose import compose, sweep_points
    from launcher.run.ops import with_servers
    from launcher.plan.model import build_plan

    points = sweep_points(["pipeline=serve", "cluster=local", "pipeline.vars.model=/m"], False)
    plan = build_plan([compose(p) for p in points], points)
    states = {"serve": {0: "completed"}, "smoke": {0: "failed"}, "report": {0: "cancelled"}}
    todo = with_servers(plan, {"serve": [], "smoke": [0], "report": [0]}, states)
    assert todo == {"serve": [0], "smoke": [0], "report": [0]}
    assert with_servers(plan, {"serve": [], "smoke": [], "report": [0]}, states)["serve"] == []
