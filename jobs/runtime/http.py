"""HTTP with JSON bodies, standard library only (urllib): a server's health and test completion, a
chat client's requests. Reads (GET) may be retried; a request with a body (POST) never is, since
sending it twice may do its work twice (RFC 9110 §9.2.2: only idempotent methods are safe to retry).

Both return (status, body): body is the parsed JSON, or the text when it is not JSON; status 0 with
body None when nothing answered (refused, timed out, no route). Errors are answers, not exceptions."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any, Tuple

RETRY_STATUS = (0, 502, 503, 504)  # nothing answered, or a proxy/server that says "not now"


def _send(req: urllib.request.Request, timeout: float) -> Tuple[int, Any]:
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            body, status = r.read().decode(errors="replace"), r.status
    except urllib.error.HTTPError as e:
        return e.code, _parse(e.read().decode(errors="replace"))
    except (urllib.error.URLError, OSError):
        return 0, None
    return status, _parse(body)


def _parse(body: str) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return body


def get_json(url: str, timeout: float = 10, retries: int = 0, backoff_s: float = 0.5) -> Tuple[int, Any]:
    """GET url: (status, body). Retried up to `retries` more times, after backoff_s, 2 x backoff_s ...
    seconds, while nothing answers or the answer is 502/503/504."""
    req = urllib.request.Request(url, headers={"Accept": "application/json"})
    for attempt in range(retries + 1):
        status, body = _send(req, timeout)
        if status not in RETRY_STATUS or attempt == retries:
            return status, body
        time.sleep(backoff_s * 2 ** attempt)
    raise AssertionError("unreachable")


def post_json(url: str, payload: Any, timeout: float = 10) -> Tuple[int, Any]:
    """POST payload as JSON to url, once: (status, body)."""
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    return _send(req, timeout)

