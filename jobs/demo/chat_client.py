"""A client of a served model (kind=python, `after: {<serve stage>: after}`): chat requests against the
endpoint the server published (jobs/runtime/endpoints.py exports OPENAI_BASE_URL and LAUNCHER_ENDPOINT_<STAGE>),
each of which must come back with text. Writes responses.jsonl; fails on the first bad answer.
params: requests (default 4), max_tokens (16), server (the serve stage; default: the only one).
Standard library only."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from jobs.runtime.endpoints import env_name
from jobs.runtime.http import post_json

PROMPTS = ["Complete the sentence: Return the number of", "Complete the sentence: The socket must be bound to",
           "Complete the sentence: Open the file pointed by", "Complete the sentence: This module provides"]


def endpoint(server: str | None) -> tuple[str, str]:
    if server:
        return os.environ[env_name(server)], os.environ[env_name(server) + "_MODEL"]
    models = [k for k in os.environ if k.startswith("LAUNCHER_ENDPOINT_") and k.endswith("_MODEL")]
    if "OPENAI_BASE_URL" not in os.environ or len(models) != 1:
        raise RuntimeError("no single server endpoint: wait on one serve stage with `after`, or set params.server")
    return os.environ["OPENAI_BASE_URL"], os.environ[models[0]]


def run(ctx) -> dict:
    p = ctx.params or {}
    base, model = endpoint(p.get("server"))
    n, max_tokens = int(p.get("requests", 4)), int(p.get("max_tokens", 16))
    out, latencies = [], []
    for i in range(n):
        prompt = PROMPTS[i % len(PROMPTS)]
        t0 = time.time()
        status, body = post_json(base.rstrip("/") + "/chat/completions", {
            "model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0}, timeout=300)
        latencies.append(time.time() - t0)
        text = body["choices"][0]["message"]["content"] if status == 200 and isinstance(body, dict) else None
        if not text:
            raise RuntimeError(f"request {i} to {base} failed: HTTP {status}: {str(body)[:500]}")
        out.append({"prompt": prompt, "response": text, "usage": body.get("usage"), "seconds": round(latencies[-1], 3)})
        print(f"[smoke] {prompt!r} -> {text!r} ({latencies[-1]:.2f} s)", flush=True)
    Path(ctx.output_dir, "responses.jsonl").write_text("".join(json.dumps(x) + "\n" for x in out))
    return {"endpoint": base, "model": model, "requests": n, "mean_latency_s": round(sum(latencies) / n, 3)}
