"""kind=generate end to end with the tiny model (jobs/demo/tiny_model.py) on vLLM's CPU build: 24 prompts
over 4 shards, shard 1 stopped halfway through (on cluster=local: the pre-timeout stop signal, sent the
way the local scheduler sends it, to every process of the task but its batch shell; on the dev cluster:
`scontrol requeue`, as a preemption would). The output holds every prompt exactly once, and the
requeued shard generated only the ids its first attempt had not written.

Each shard starts vLLM (~25 s alone, minutes when 4 start at once on 2 cores): extended."""
from __future__ import annotations

import json
import os
import signal
from collections import Counter
from pathlib import Path

import pytest

from conftest import ROOT, job_of, slurm, wait_for
from chat_model_helper import make_chat_model

from launcher.local.driver import signal_steps

pytestmark = [pytest.mark.slow, pytest.mark.extended]

PROMPTS, SHARDS = 24, 4
VLLM_PYTHON = ROOT / ".envs" / "vllm" / "bin" / "python"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    if not VLLM_PYTHON.exists():
        pytest.skip("the vllm stage environment is not built (scripts/setup --envs)")
    return make_chat_model(VLLM_PYTHON, tmp_path_factory.mktemp("model") / "tiny")


def write_pipeline(tmp_path: Path, model: Path) -> Path:
    """A config directory with pipeline=gentest and its prompts (every 5th line without an id: its id is
    '<file>:<line>'). One request per batch and 300 tokens each (EOS ignored): a shard takes seconds,
    so the stop lands between its first and last request."""
    prompts = tmp_path / "prompts.jsonl"
    with open(prompts, "w") as f:
        for i in range(PROMPTS):
            rec = {"prompt": f"Question {i}: what comes next?", "topic": f"t{i % 3}"}
            if i % 5:
                rec["id"] = f"q{i}"
            f.write(json.dumps(rec) + "\n")
    conf = tmp_path / "conf"
    (conf / "pipeline").mkdir(parents=True)
    (conf / "pipeline" / "gentest.yaml").write_text(f"""defaults: [schema, _self_]
name: gentest
stages:
  gen:
    kind: generate
    tasks: {SHARDS}
    resources: {{time: "00:30:00", mem_gb: 4}}
    generate:
      model: {model}
      input: {prompts}
      batch_size: 1
      keep: [topic]
      max_model_len: 512
      sampling: {{temperature: 0.8, max_tokens: 300, seed: 7, extra: {{ignore_eos: true}}}}
""")
    return conf


def partial(run_dir: Path, task: int) -> Path:
    return run_dir / "stages" / "gen" / "ckpt" / str(task) / "generations.jsonl"


def lines(path: Path) -> list:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def check_every_prompt_once(run_dir: Path, stopped: int) -> None:
    out = sorted((run_dir / "stages" / "gen" / "out" / "0").glob("*/generations.jsonl"))
    assert len(out) == SHARDS
    records = [r for f in out for r in lines(f)]
    ids = Counter(r["id"] for r in records)
    expected = {f"q{i}" if i % 5 else f"prompts.jsonl:{i}" for i in range(PROMPTS)}
    assert set(ids) == expected and all(c == 1 for c in ids.values()), ids  # every prompt exactly once
    assert all(r["completion_tokens"] == 300 and r["prompt_tokens"] > 0 and r["completion"] for r in records)
    assert all(r["sampling"]["max_tokens"] == 300 and r["input"]["topic"].startswith("t") for r in records)
    # the stopped shard: its first attempt's lines were kept, the second generated only the others
    written = lines(partial(run_dir, stopped))
    assert Counter(r["id"] for r in written).most_common(1)[0][1] == 1  # nothing generated twice
    attempts = Counter(r["attempt"] for r in written)
    per_shard = PROMPTS // SHARDS
    assert set(attempts) == {0, 1} and 0 < attempts[0] < per_shard, attempts
    result = json.loads((run_dir / "stages" / "gen" / "out" / "0" / str(stopped) / "result.json").read_text())
    first, second = result["attempts"]
    assert first["stopped"] and first["generated"] == attempts[0]
    assert second["skipped"] == attempts[0] and second["generated"] == per_shard - attempts[0]
    assert result["throughput"]["prompts_per_s"] > 0 and result["throughput"]["generated_tokens_per_s"] > 0


def shell_of(run_dir: Path, task: int) -> int:
    """The batch shell (`bash <run>/stages/gen/scripts/...`) of an array task of this run."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmd[0] == b"bash" and str(run_dir).encode() in b" ".join(cmd) and \
                f"LAUNCHER_ARRAY_TASK_ID={task}".encode() in env:
            return int(pid)
    raise AssertionError(f"no batch shell of task {task} of {run_dir}")


def test_a_stopped_shard_resumes_without_regenerating_locally(cli, tmp_path, tiny_model):
    conf = write_pipeline(tmp_path, tiny_model)
    cli("run", "--config-dir", str(conf), "pipeline=gentest", "cluster=local")
    run_dir = cli.run_dir()
    wait_for(lambda: len(lines(partial(run_dir, 1))) >= 2, 900, "shard 1's first results", poll=0.05)
    sent = signal_steps(shell_of(run_dir, 1), signal.SIGUSR2)  # as the local scheduler does before a time limit
    assert sent
    assert cli.wait(timeout=1200)["state"] == "COMPLETED"
    check_every_prompt_once(run_dir, 1)


def test_a_requeued_shard_resumes_without_regenerating_on_slurm(dcli, dev_slurm, tmp_path, tiny_model):
    conf = write_pipeline(tmp_path, tiny_model)
    dcli("run", "--config-dir", str(conf), "pipeline=gentest", "cluster=dev")
    run_dir = dcli.run_dir()
    wait_for(lambda: len(lines(partial(run_dir, 1))) >= 2, 900, "shard 1's first results", poll=0.05)
    slurm(dev_slurm, "scontrol", "requeue", f"{job_of(dcli, 'gen')}_1")  # as a preemption would, without warning
    assert dcli.wait(timeout=1200)["state"] == "COMPLETED"
    check_every_prompt_once(run_dir, 1)
