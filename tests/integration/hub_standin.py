"""A stand-in for the Hugging Face Hub's write API, for the publish test only (no hub is reachable
here; the issue allows this one stand-in): it answers huggingface_hub's create_repo, preupload and
commit calls the way the hub does for small files ("regular" uploads, contents in the commit), and
records every request so the test can assert on exactly what a publish sends."""
from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class StandinHub:
    def __init__(self):
        self.requests: list = []  # (method, path, headers with lower-case names, body as JSON / NDJSON lines)
        self.files: dict = {}  # repo -> {path: bytes}
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, code: int, obj) -> None:
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                hub.requests.append(("GET", self.path, {k.lower(): v for k, v in self.headers.items()}, None))
                self._reply(404, {"error": "not found"})

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Type", "").startswith("application/x-ndjson"):
                    body = [json.loads(x) for x in raw.decode().splitlines() if x.strip()]
                else:
                    body = json.loads(raw or b"null")
                hub.requests.append(("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                parts = self.path.split("?")[0].strip("/").split("/")
                if parts[:2] == ["api", "validate-yaml"]:  # the card's front matter
                    return self._reply(200, {"errors": [], "warnings": []})
                if parts[:3] == ["api", "repos", "create"]:
                    name = f"{body.get('organization')}/{body['name']}" if body.get("organization") else body["name"]
                    prefix = "" if body.get("type", "model") == "model" else f"{body['type']}s/"
                    return self._reply(200, {"url": f"http://{self.headers['Host']}/{prefix}{name}", "name": name})
                if len(parts) >= 6 and parts[0] == "api" and parts[4] == "preupload":
                    return self._reply(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                                                        "oid": None} for f in body["files"]]})
                if len(parts) >= 6 and parts[0] == "api" and parts[4] == "commit":
                    repo = "/".join(parts[2:4])
                    for line in body:
                        if line["key"] == "file":
                            hub.files.setdefault(repo, {})[line["value"]["path"]] = base64.b64decode(line["value"]["content"])
                    oid = "c0ffee" * 6 + "abcd"
                    return self._reply(200, {"success": True, "commitOid": oid,
                                             "commitUrl": f"http://{self.headers['Host']}/{repo}/commit/{oid}"})
                self._reply(404, {"error": f"the stand-in does not know {self.path}"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
