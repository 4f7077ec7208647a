"""Endpoints servers publish (stages/<stage>/endpoints/<point>.json, jobs/layout.py) and the client
side: a task whose spec names `servers` (stages it waits on with `after`) waits for each one's "ready"
endpoint before its work, then watches it while it works (a server that fails meanwhile cancels it:
watch_servers), and gets LAUNCHER_ENDPOINT_<SERVER> (the base URL, http://host:port/v1) and
LAUNCHER_ENDPOINT_<SERVER>_MODEL; with one server also OPENAI_BASE_URL. A server that failed before
it was ready cancels the client (jobs.context.Cancel). Standard library only; nothing here depends on
which kind the server is."""
from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable, Dict, Optional

from jobs import layout
from jobs.context import Cancel
from jobs.runtime import polling
from jobs.runtime.log import log

CLIENT_EXTRA_WAIT_S = 600  # a client waits the server's ready timeout plus this (queueing, requeues)
STALE_END_S = 60  # an endpoint that said stopped/failed before a client began waiting: replaced by then?


def env_name(stage: str) -> str:
    """LAUNCHER_ENDPOINT_<STAGE>: the stage name upper-cased, other characters than letters and digits as _
    (jobs.layout.endpoint_variables, which the launcher's name-collision check uses too)."""
    return layout.endpoint_variables(stage)[0]


def _ready(path, server: str, waited_from: float, should_stop):
    def check() -> Dict[str, Any] | None:
        ep = layout.read_json(path, None) or {}
        if ep.get("state") == "ready":
            return ep
        # An end seen now, or one older than this wait that no new attempt replaced within a minute
        # (a resumed run resubmits the server with its clients; it rewrites the file as it starts).
        ended = ep.get("state") in ("failed", "stopped") and (
            ep.get("stopped", 0) >= waited_from or time.time() - waited_from > STALE_END_S)
        if ended and ep["state"] == "failed":
            raise Cancel(f"server {server} failed before it was ready (see `launcher logs <run> {server}`)")
        if ended:
            raise RuntimeError(f"server {server} stopped ({ep.get('reason')}) before this task could use it")
        if should_stop():
            raise RuntimeError(f"no endpoint from {server} after {time.time() - waited_from:.0f} s")
        return None

    return check


def wait_for_servers(task) -> None:
    """Block until every server of task.spec["servers"] ({stage: {"ready_timeout_s"}}) has published a
    ready endpoint for task.point; export them into this process's environment. `task`: what a kind
    gets (spec, run_dir, point, ctx). Raises Cancel when a server failed before it was ready,
    RuntimeError when it stopped, did not become ready in time, or the task was asked to stop."""
    servers = task.spec["servers"]
    for server, info in servers.items():
        path = layout.endpoint_file(task.run_dir, server, task.point)
        waited_from = time.time()
        log(f"waiting for the endpoint of {server} ({path})")
        ep = polling.until(_ready(path, server, waited_from, task.ctx.should_stop),
                           float(info["ready_timeout_s"]) + CLIENT_EXTRA_WAIT_S, 1)
        if ep is None:
            raise RuntimeError(f"no endpoint from {server} after {time.time() - waited_from:.0f} s")
        os.environ[env_name(server)] = ep["url"]
        os.environ[layout.endpoint_variables(server)[1]] = ep["model"]
        log(f"{server}: {ep['url']} model {ep['model']!r} ({env_name(server)})")
    if len(servers) == 1:
        os.environ["OPENAI_BASE_URL"] = os.environ[env_name(next(iter(servers)))]
        os.environ.setdefault("OPENAI_API_KEY", "EMPTY")


WATCH_EVERY_S = 2.0
# A client whose work failed while its server was ready waits this long for the server's endpoint to
# say failed (the server task notices its process's death within a poll, jobs/kinds/serve.py): then
# the client is cancelled by its server's failure, not failed on its own.
FAILURE_GRACE_S = 10.0


def server_failure(task, wait_s: float = 0.0) -> Optional[str]:
    """Why one of the task's servers failed (its endpoint file says "failed"), or None; polls up to
    `wait_s` seconds for it."""
    deadline = time.time() + wait_s
    while True:
        for server in task.spec.get("servers") or {}:
            ep = layout.read_json(layout.endpoint_file(task.run_dir, server, task.point), None) or {}
            if ep.get("state") == "failed":
                return (f"server {server} failed while serving ({ep.get('error') or ep.get('reason')}; "
                        f"`launcher logs <run> {server}`)")
        if time.time() >= deadline:
            return None
        time.sleep(0.5)


def watch_servers(task, on_failed: Callable[[str], None], every_s: float = WATCH_EVERY_S) -> threading.Thread:
    """While the client works: a daemon thread that reads its servers' endpoint files every `every_s`
    and calls on_failed(why) once when one says "failed" (the server or its process died while
    serving: jobs/kinds/serve.py); the client task then ends as cancelled (jobs.task). A server that
    stopped normally (its clients ended, its serve_s passed) is not a failure of the client's."""

    def watch() -> None:
        while True:
            time.sleep(every_s)
            why = server_failure(task)
            if why:
                on_failed(why)
                return

    thread = threading.Thread(target=watch, name="server-watch", daemon=True)
    thread.start()
    return thread
