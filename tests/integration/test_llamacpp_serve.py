"""serve.engine=llama.cpp (llama-cpp-python's server, CPU build, on a tiny GGUF made here: gguf_helper.py)
on cluster=local, and once on the dev cluster:

- the server publishes its endpoint starting -> ready (after /v1/models and a one-token completion) ->
  stopped, the smoke client gets its chat completions, and no process of the server is left (/proc);
- speculative decoding with a draft GGUF gives the same greedy answers;
- a server SIGKILLed while its client is working: the serve task fails with the reason, the client
  is cancelled, nothing is left running.
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from jobs import layout
from conftest import wait_for
from gguf_helper import make_gguf

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def gguf(cpu_python, llamacpp_python, tmp_path_factory) -> Path:
    # q8_0, as the demo serves it: llama.cpp's weight repacking crashed the server on quantized types here
    return make_gguf(cpu_python, llamacpp_python, tmp_path_factory.mktemp("gguf"), "MOSTLY_Q8_0")


def server_processes(run: Path) -> list:
    """What is left of the run's servers, from /proc: a process in a server's session (the endpoint file
    records its leader's pid, the session id) or whose command line names the run's GGUF server."""
    left = []
    sessions = {(layout.read_json(f, {}) or {}).get("pid") for f in run.glob("stages/*/endpoints/*.json")} - {None}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            sid = os.getsid(int(d.name))
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ProcessLookupError):
            continue
        if sid in sessions or ("llamacpp_server" in cmd and str(run) in cmd):
            left.append(f"{d.name}: {cmd[:200]}")
    return left


class States:
    """Every state the endpoint file goes through."""

    def __init__(self, path: Path):
        self.path, self.seen, self.stop = path, [], False
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while not self.stop:
            info = layout.read_json(self.path, None)
            if isinstance(info, dict) and (not self.seen or self.seen[-1] != info["state"]):
                self.seen.append(info["state"])
            time.sleep(0.1)


def launch(cli, gguf: Path, *overrides: str):
    cli("run", "pipeline=serve", "cluster=local", f"pipeline.vars.model={gguf}",
        "pipeline.stages.serve.serve.engine=llama.cpp", "pipeline.stages.serve.resources.cpus_per_task=1",
        "pipeline.stages.serve.resources.mem_gb=1", "pipeline.vars.ready_timeout_s=120", *overrides)
    return cli.run_dir()


def test_a_gguf_is_served_and_the_smoke_client_gets_completions(cli, gguf):
    run = launch(cli, gguf)
    states = States(layout.endpoint_file(run, "serve", 0))
    st = cli.wait(timeout=600, poll=1)
    states.stop = True
    assert st["state"] == "COMPLETED", st
    assert states.seen[0] == "starting" and "ready" in states.seen and states.seen[-1] == "stopped", states.seen
    info = json.loads(layout.endpoint_file(run, "serve", 0).read_text())
    assert info["engine"] == "llama.cpp" and info["health"] == "/v1/models"
    assert info["reason"] == "clients ended" and info["clean_exit"] is True
    responses = [json.loads(x) for x in (run / "stages/smoke/out/0/0/responses.jsonl").read_text().splitlines()]
    assert len(responses) == 4 and all(r["response"] for r in responses)
    log = "".join(p.read_text() for p in (run / "stages/serve/logs").glob("*"))
    assert "-m jobs.adapters.llamacpp_server --model " + str(gguf) in log and "--n_threads 1" in log
    assert json.loads((run / "environments.json").read_text())["stages"]["serve"]["name"] == "llamacpp"
    assert server_processes(run) == []


@pytest.mark.extended  # ~2 min: two servers one after the other
def test_a_draft_gguf_proposes_tokens_and_the_answers_do_not_change(cli, gguf):
    """Speculative decoding with a draft GGUF (here the model itself: same vocabulary) through
    jobs.adapters.llamacpp_draft: the smoke client's greedy answers equal those without a draft."""
    plain_run = launch(cli, gguf)
    assert cli.wait(timeout=600, poll=1)["state"] == "COMPLETED"
    run = launch(cli, gguf, "pipeline.stages.serve.serve.speculative.method=draft",
                 f"pipeline.stages.serve.serve.speculative.draft_model={gguf}")
    st = cli.wait(run.name, timeout=600, poll=1)
    assert st["state"] == "COMPLETED", st
    log = "".join(p.read_text() for p in (run / "stages/serve/logs").glob("*"))
    assert f"-m jobs.adapters.llamacpp_server --draft {gguf} --model {gguf}" in log
    answers = [[json.loads(x)["response"] for x in (r / "stages/smoke/out/0/0/responses.jsonl").read_text().splitlines()]
               for r in (plain_run, run)]
    assert answers[0] == answers[1] and len(answers[0]) == 4
    assert server_processes(run) == []


def test_a_gguf_server_killed_mid_serve_fails_its_task_and_cancels_its_client(cli, gguf):
    run = launch(cli, gguf, "pipeline.stages.smoke.params.requests=100000")
    ep = layout.endpoint_file(run, "serve", 0)
    wait_for(lambda: (layout.read_json(ep, {}) or {}).get("state") == "ready", 300, "the server ready")
    responses = run / "stages/smoke/logs"
    wait_for(lambda: "[smoke]" in "".join(p.read_text() for p in responses.glob("*")), 120, "a first answer")
    os.kill(json.loads(ep.read_text())["pid"], signal.SIGKILL)  # the server, not its task
    st = cli.wait(timeout=180, poll=1)
    stages = {s["name"]: s for s in st["stages"]}
    assert stages["serve"]["failed"] == [0] and stages["smoke"]["cancelled"] == [0], st
    assert stages["smoke"]["failed"] == [] and stages["report"]["cancelled"] == [0], st
    failure = json.loads(next((run / "stages/serve/markers").glob("*/0.failed")).read_text())
    assert "llama.cpp server exited with status -9 while serving" in failure["error"], failure
    info = json.loads(ep.read_text())
    assert info["state"] == "failed" and info["clean_exit"] is True
    client_log = "".join(p.read_text() for p in responses.glob("*"))
    assert "cancelled: server serve failed while serving" in client_log, client_log[-2000:]
    assert server_processes(run) == []


def test_a_gguf_is_served_on_the_dev_cluster(dcli, gguf):
    """The same as the first test, as Slurm jobs (dev cluster, environment llamacpp of cluster=dev)."""
    dcli("run", "pipeline=serve", "cluster=dev", f"pipeline.vars.model={gguf}",
         "pipeline.stages.serve.serve.engine=llama.cpp", "pipeline.vars.ready_timeout_s=300")
    run = dcli.run_dir()
    states = States(layout.endpoint_file(run, "serve", 0))
    st = dcli.wait(timeout=900, poll=2)
    states.stop = True
    assert st["state"] == "COMPLETED" and all(s["state"] == "COMPLETED" for s in st["stages"]), st
    assert states.seen[0] == "starting" and "ready" in states.seen and states.seen[-1] == "stopped", states.seen
    info = json.loads(layout.endpoint_file(run, "serve", 0).read_text())
    assert info["engine"] == "llama.cpp" and info["clean_exit"] is True
    assert len((run / "stages/smoke/out/0/0/responses.jsonl").read_text().splitlines()) == 4
    assert server_processes(run) == []
