"""`launcher dashboard`: a small read-only web server on the login node, bound to localhost by default,
that shows the runs of a run root, a run's stages with their states and the progress of its running
tasks, and a campaign's curves and costs, refreshing as the files change. docs/dashboard.md.

Starlette (an ASGI toolkit: routing, Jinja2 templates, static files, a test client) served by uvicorn:
both small, typed and well kept, and neither imports anything heavy; Starlette answers the synchronous
views below from a thread pool, so a slow scheduler query delays only the view that waits for it.
They are the `dashboard` extra (pyproject.toml), imported only when the verb runs: `launcher --help`
stays fast, and a login node without them gets an error saying what to install.

Pages render the templates under templates/dashboard/ (autoescaped: every value is text); each page's
live part is polled by templates/dashboard/static/dashboard.js from a JSON endpoint that returns the
data (the same documents as `launcher runs --json` and `status --json`) and the fragments rendered
from that data. What is computed, and how every viewer shares one answer: dashboard_views.py."""
from __future__ import annotations

import ipaddress
import socket
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional

from launcher.errors import LauncherError, NotFound, SchedulerUnavailable

EXTRA = ("starlette", "uvicorn")
DEFAULT_PORT = 8765


def require_extra() -> None:
    """LauncherError naming what to install when the `dashboard` extra is missing."""
    import importlib.util

    missing = [m for m in EXTRA if importlib.util.find_spec(m) is None]
    if missing:
        raise LauncherError(f"`launcher dashboard` needs {' and '.join(missing)} (the `dashboard` extra): "
                            f"pip install 'slurm-llm-launcher[dashboard]' into the launcher's environment "
                            f"({sys.executable}), or scripts/setup in a checkout")


def _helpers() -> Dict[str, Any]:
    """The formatting functions the templates call: the report's numbers, status's durations and rates."""
    from launcher.reports.report import fmt
    from launcher.run.status_view import duration, si

    def when(t: Optional[float]) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "—"

    return {"fmt": fmt, "duration": duration, "si": si, "when": when}


def make_app(views, refresh_s: float = 2.0):
    """The ASGI app over a dashboard_views.Views. Pages: / (runs; ?campaign=NAME), /runs/{id}, /campaigns/{name};
    their JSON: /api/runs, /api/runs/{id}, /api/campaigns/{name} ({..., "html": {element id: fragment}});
    curves: /campaigns/{name}/plots/{index}.png?v=VERSION. A run or campaign not under the run root: 404."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, PlainTextResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles
    from starlette.templating import Jinja2Templates

    from jobs.runtime.templating import TEMPLATES_DIR, environment

    templates = Jinja2Templates(env=environment())
    helpers = {**_helpers(), "root": str(views.root), "refresh_s": refresh_s}

    def page(request, template: str, api: str, **data) -> Response:
        return templates.TemplateResponse(request, f"dashboard/{template}", {**helpers, "api": api, **data})

    def live(request, fragments: Dict[str, str], data: Dict[str, Any]) -> JSONResponse:
        """The data, and each live element's fragment rendered from it (the same templates as the page)."""
        ctx = {"request": request, **helpers, **data}
        html = {eid: templates.get_template(f"dashboard/{name}").render(ctx) for eid, name in fragments.items()}
        return JSONResponse({**data, "html": html}, headers={"Cache-Control": "no-store"})

    def api_url(request, route: str, **params) -> str:
        """The JSON endpoint of a page, with the page's query (?campaign=)."""
        query = request.url.query
        return str(request.url_for(route, **params)) + (f"?{query}" if query else "")

    def runs_page(request):
        campaign = request.query_params.get("campaign") or None
        return page(request, "runs.html.j2", api_url(request, "runs_json"), runs=views.runs(campaign), campaign=campaign)

    def runs_json(request):
        return live(request, {"live-runs": "runs_table.html.j2"}, {"runs": views.runs(request.query_params.get("campaign") or None)})

    def run_page(request):
        run_id = request.path_params["run_id"]
        return page(request, "run.html.j2", api_url(request, "run_json", run_id=run_id), **views.run(run_id))

    def run_json(request):
        return live(request, {"live-run": "run_stages.html.j2"}, views.run(request.path_params["run_id"]))

    def campaign_page(request):
        name = request.path_params["name"]
        return page(request, "campaign.html.j2", api_url(request, "campaign_json", name=name), view=views.campaign(name))

    def campaign_json(request):
        view = views.campaign(request.path_params["name"])
        return live(request, {"live-campaign": "campaign_body.html.j2"}, {"view": view})

    def plot(request):
        png = views.plot(request.path_params["name"], request.path_params["index"], request.query_params.get("v", ""))
        return Response(png, media_type="image/png", headers={"Cache-Control": "public, max-age=86400, immutable"})

    def error(request, exc: LauncherError):
        code = 404 if isinstance(exc, NotFound) else 503 if isinstance(exc, SchedulerUnavailable) else 500
        return PlainTextResponse(str(exc), status_code=code)

    routes = [Route("/", runs_page), Route("/runs/{run_id}", run_page), Route("/campaigns/{name}", campaign_page),
              Route("/api/runs", runs_json), Route("/api/runs/{run_id}", run_json),
              Route("/api/campaigns/{name}", campaign_json),
              Route("/campaigns/{name}/plots/{index:int}.png", plot),
              Mount("/static", StaticFiles(directory=str(TEMPLATES_DIR / "dashboard" / "static")), name="static")]
    return Starlette(routes=routes, exception_handlers={LauncherError: error})


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: a free one, which the caller prints); LauncherError when
    the address is taken or cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise LauncherError(f"dashboard: cannot listen on {host}:{port}: {e.strerror or e} (--port, --host)") from e
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def cmd_dashboard(args) -> int:
    """Serve until interrupted (Ctrl-C: exit 0)."""
    require_extra()
    import uvicorn

    from launcher.reports.dashboard_views import Views
    from launcher.run.rundir import default_root

    root = (args.root or default_root()).resolve()
    if not root.is_dir():
        raise LauncherError(f"dashboard: no run root {root} (--root, $LAUNCHER_RUN_ROOT)")
    sock = bind(args.host, args.port)
    views = Views(root, interval_s=args.interval, refresh_s=args.refresh)
    host, port = sock.getsockname()[:2]
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
    print(f"dashboard of {root} at {url} (read-only; Ctrl-C stops it)", flush=True)
    if not loopback(args.host):
        print(f"warning: listening on {args.host}: anyone who can reach it sees these runs (no login); "
              f"the default, 127.0.0.1, with `ssh -L {port}:127.0.0.1:{port} <login node>`, keeps them yours",
              file=sys.stderr, flush=True)
    config = uvicorn.Config(make_app(views, args.refresh), log_level="warning", access_log=False)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    return 0


def register(sub) -> None:
    """The `dashboard` verb's parser (launcher/cli.py calls this); imports nothing of the extra."""
    from launcher.argparsing import seconds

    sp = sub.add_parser(
        "dashboard", help="serve a live, read-only web page of the runs: stages, progress, campaign curves and costs",
        description="A small read-only web server (Starlette + uvicorn, the `dashboard` extra) showing the runs of "
        "the run root (the runs index), a run's stages with their states and the progress of its running tasks "
        "(step/total, tokens/s, loss, ETA: what `status --json` says), and a campaign's curves and cost per variant "
        "(what `launcher report` shows), refreshing every few seconds. It asks the scheduler as a watcher does "
        "(backing off while nothing changes) and shares each run's answer with `status --watch` and wait=true. "
        "Bound to 127.0.0.1: from your machine, `ssh -L 8765:127.0.0.1:8765 <login node>` and open "
        "http://127.0.0.1:8765/. docs/dashboard.md")
    sp.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT}; 0: a free one, printed)")
    sp.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only; "
                    "anything else shows your runs to whoever reaches it, without a login)")
    sp.add_argument("--root", "--run-root", dest="root", type=Path,
                    help="run root to show (default: $LAUNCHER_RUN_ROOT or ./runs)")
    sp.add_argument("--interval", type=seconds, metavar="S", help="ask the scheduler about a viewed run every S "
                    "seconds, without backing off (default: the backend's poll interval, backing off to 5 min)")
    sp.add_argument("--refresh", type=seconds, default=2.0, metavar="S",
                    help="the page re-reads the run directory every S seconds (default 2)")
