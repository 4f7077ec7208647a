"""serve.engine (vllm | llama.cpp | tgi) and serve.speculative without any engine installed: the
checks before submission (launcher/engines/, launcher/kinds/serve.py), the environment the engine
picks, a model's vocabulary as the login node reads it (launcher/plan/vocab.py), each engine's server
command (jobs/adapters/vllm.py, llamacpp.py, tgi.py), TGI's rendered batch script (golden), and a
client cancelled when its server fails while serving (jobs/runtime/endpoints.py)."""
import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from gguf_file import write_gguf
from jobs import layout
from jobs.adapters import llamacpp, tgi, vllm
from jobs.runtime import endpoints as client_side
from launcher import engines
from launcher.plan import vocab
from launcher.config.compose import PROJECT_ROOT, compose
from launcher.config.environments import resolve
from launcher.plan.model import build_plan
from launcher.plan.render import build_requests, render_script
from plan_errors import S, errors_of

pytestmark = pytest.mark.unit
GOLDEN = Path(__file__).resolve().parent.parent / "golden"
SERVE = ["pipeline=serve", "cluster=local", "pipeline.vars.model=/m/chat.gguf", f"{S}.serve.serve.engine=llama.cpp"]
KEY = f"{S}.serve.serve"


def plan_of(*overrides):
    return build_plan([compose(list(overrides))], [[]])


def test_the_engine_picks_its_environment_and_the_stage_name_still_wins():
    assert plan_of(*SERVE).stages["serve"].environment["name"] == "llamacpp"
    vllm_plan = plan_of("pipeline=serve", "cluster=local", "pipeline.vars.model=/m")
    assert vllm_plan.stages["serve"].environment["name"] == "vllm"
    assert vllm_plan.stages["serve"].payloads[0]["serve"]["engine"] == "vllm"  # the default
    cluster = {"environments": {"cpu": {}, "vllm": {}, "llamacpp": {}}, "stage_environments": {"serve": "vllm", "chat": "cpu"}}
    assert resolve(cluster, "chat", "serve", "llamacpp")["name"] == "cpu"  # the stage's own name wins
    assert resolve(cluster, "other", "serve", "llamacpp")["name"] == "llamacpp"
    assert resolve(cluster, "other", "serve", "tgi")["name"] == "vllm"  # not defined: the kind's mapping


def test_each_engine_is_resolved_in_its_environment_by_preflight():
    from launcher.kinds.serve import KIND

    assert KIND.targets(plan_of(*SERVE).stages["serve"]) == [(f"{KEY}.engine", "llama_cpp.server.app:create_app")]
    assert KIND.targets(plan_of("pipeline=serve", "cluster=local", "pipeline.vars.model=/m").stages["serve"])[0][1] \
        == "vllm.entrypoints.openai.api_server:run_server"


@pytest.mark.parametrize("overrides, key, message", [
    ([f"{S}.serve.serve.engine=sglang"], "engine", "unknown engine 'sglang': one of vllm, llama.cpp, tgi"),
    (["pipeline.vars.model=/m/folder"], "model", "engine llama.cpp serves a GGUF file"),
    ([f"{S}.serve.serve.dtype=bfloat16"], "dtype", "serves the GGUF's own types"),
    ([f"{S}.serve.serve.speculative.method=ngram", f"{S}.serve.serve.speculative.draft_model=/m/d.gguf"],
     "speculative.draft_model", "is set but method=ngram reads no draft model"),
    ([f"{S}.serve.serve.speculative.method=medusa"], "speculative.method", "unknown method 'medusa'"),
    ([f"{S}.serve.serve.speculative.method=ngram", f"{S}.serve.serve.speculative.num_speculative_tokens=0"],
     "speculative.num_speculative_tokens", "must be >= 1"),
])
def test_bad_serve_settings_name_stage_and_key(overrides, key, message):
    errors = errors_of(*SERVE, *overrides)
    assert message in errors[("serve", f"{KEY}.{key}")], errors


def test_vllm_needs_a_draft_model_for_method_draft_and_tgi_runs_no_draft():
    errors = errors_of("pipeline=serve", "cluster=local", "pipeline.vars.model=/m", f"{KEY}.speculative.method=draft")
    assert "needs a draft model" in errors[("serve", f"{KEY}.speculative.draft_model")]
    errors = errors_of("pipeline=serve", "cluster=local", "pipeline.vars.model=/m", f"{KEY}.engine=tgi",
                       f"{KEY}.speculative.method=draft", f"{KEY}.speculative.draft_model=/d")
    assert "engine tgi runs ngram, not 'draft'" in errors[("serve", f"{KEY}.speculative.method")]
    assert "runs TGI's CUDA image: give the stage GPUs" in errors[("serve", f"{S}.serve.resources.gpus_per_node")]


def test_chat_format_is_refused_for_an_engine_that_ignores_it():
    errors = errors_of("pipeline=serve", "cluster=local", "pipeline.vars.model=/m", f"{KEY}.chat_format=chatml")
    assert "would be ignored" in errors[("serve", f"{KEY}.chat_format")] or any(
        "chat_format" in k and "ignored" in m for (_, k), m in errors.items()), errors


def _folder(path: Path, vocab_size: int, tokens=None) -> str:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "llama", "vocab_size": vocab_size}))
    if tokens:
        (path / "tokenizer.json").write_text(json.dumps({"model": {"vocab": {t: i for i, t in enumerate(tokens)}},
                                                         "added_tokens": []}))
    return str(path)


def test_a_draft_model_with_another_vocabulary_is_refused_before_submission(tmp_path):
    target, small = _folder(tmp_path / "t", 32000), _folder(tmp_path / "d", 1000)
    s = {"model": target, "max_model_len": None, "speculative": {"method": "draft", "draft_model": small}}
    (key, message), = engines.get("vllm").preflight(s, {"name": "vllm"})
    assert key == "serve.speculative.draft_model" and "1000 tokens, the target's 32000" in message
    same = _folder(tmp_path / "d2", 32000)
    assert engines.get("vllm").preflight({**s, "speculative": {"method": "draft", "draft_model": same}}, {}) == []
    a, b = _folder(tmp_path / "a", 3, ["x", "y", "z"]), _folder(tmp_path / "b", 3, ["x", "y", "w"])
    assert "tokens differ" in vocab.mismatch(a, b)
    missing = engines.get("vllm").preflight({**s, "speculative": {"method": "draft", "draft_model": "/nope"}}, {})
    assert missing == [("serve.speculative.draft_model", "/nope does not exist")]


def test_the_login_node_reads_a_gguf_vocabulary_without_the_gguf_package(tmp_path):
    a = write_gguf(tmp_path / "a.gguf", ["<s>", "a", "b"])
    b = write_gguf(tmp_path / "b.gguf", ["<s>", "a", "b"], extra_first=False)
    c = write_gguf(tmp_path / "c.gguf", ["<s>", "a", "b", "c"])
    assert vocab.gguf_vocab(str(a))[0] == 3 and vocab.of(str(a)) == vocab.of(str(b))
    assert "4 tokens, the target's 3" in vocab.mismatch(str(a), str(c))
    (tmp_path / "x.gguf").write_bytes(b"nope")
    assert vocab.gguf_vocab(str(tmp_path / "x.gguf")) is None
    assert engines.get("llama.cpp").model_problem(str(tmp_path / "x.gguf")).endswith("(no GGUF magic at its start)")
    assert engines.get("llama.cpp").model_problem(str(a)) == ""
    assert "is not a file" in engines.get("llama.cpp").model_problem(str(tmp_path))


def test_a_draft_gguf_of_another_vocabulary_is_refused_for_llamacpp(tmp_path):
    target = write_gguf(tmp_path / "t.gguf", ["<s>", "a", "b"])
    s = {"model": str(target), "speculative": {"method": "draft", "draft_model": str(tmp_path / "d.gguf")}}
    write_gguf(tmp_path / "d.gguf", ["<s>", "a", "b", "c"])
    (key, message), = engines.get("llama.cpp").preflight(s, {})
    assert key == "serve.speculative.draft_model" and "4 tokens, the target's 3" in message
    write_gguf(tmp_path / "d.gguf", ["<s>", "a", "x"])
    assert "tokens differ" in engines.get("llama.cpp").preflight(s, {})[0][1]
    write_gguf(tmp_path / "d.gguf", ["<s>", "a", "b"], extra_first=False)
    assert engines.get("llama.cpp").preflight(s, {}) == []
    folder = engines.get("llama.cpp").preflight({**s, "speculative": {"method": "draft", "draft_model": str(tmp_path)}}, {})
    assert "drafts with a GGUF file" in folder[0][1]


def test_vllm_gets_its_speculative_config_as_json_before_the_users_arguments():
    s = {"tensor_parallel": 1, "dtype": "auto", "args": ["--seed", "1"],
         "speculative": {"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 4}}
    argv = vllm.server_command("/py", s, "/m", 30001, "chat", {"gpus_per_node": 0}, Path("/tmp"))
    i = argv.index("--speculative-config")
    assert json.loads(argv[i + 1]) == {"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 4}
    assert argv[-2:] == ["--seed", "1"]
    draft = vllm.speculative_config({"method": "draft", "draft_model": "/d", "num_speculative_tokens": 2})
    assert draft == {"method": "draft_model", "model": "/d", "num_speculative_tokens": 2}
    assert "--speculative-config" not in vllm.server_command("/py", {**s, "speculative": {}}, "/m", 1, "c", {}, Path("/t"))


def test_llamacpp_server_command_takes_threads_context_and_prompt_lookup():
    s = {"max_model_len": 512, "chat_format": None, "args": ["--verbose", "false"],
         "speculative": {"method": "ngram", "num_speculative_tokens": 6}}
    argv = llamacpp.server_command("/py", s, "/m/x.gguf", 30002, "chat", {"cpus_per_task": 3}, Path("/tmp"))
    joined = " ".join(argv)
    assert argv[:3] == ["/py", "-m", "jobs.adapters.llamacpp_server"] and "--model /m/x.gguf --model_alias chat" in joined
    assert "--n_ctx 512 --n_threads 3 --n_threads_batch 3 --n_gpu_layers 0" in joined
    assert "--draft_model prompt-lookup-decoding --draft_model_num_pred_tokens 6" in joined
    assert joined.endswith("--verbose false") and llamacpp.HEALTH_PATH == "/v1/models"
    draft = llamacpp.server_command("/py", {**s, "speculative": {"method": "draft", "draft_model": "/m/d.gguf",
                                                                 "num_speculative_tokens": 3}}, "/m/x.gguf", 1, "c", {}, Path("/t"))
    assert draft[:5] == ["/py", "-m", "jobs.adapters.llamacpp_server", "--draft", "/m/d.gguf"]
    assert draft[5:7] == ["--model", "/m/x.gguf"]
    assert "--draft_model prompt-lookup-decoding --draft_model_num_pred_tokens 3" in " ".join(draft)


def test_tgi_command_shards_over_the_gpus_and_speculates_by_ngram():
    s = {"tensor_parallel": 2, "max_model_len": 1024, "dtype": "bfloat16", "args": [],
         "speculative": {"method": "ngram", "num_speculative_tokens": 2}}
    argv = tgi.server_command("/py", s, "/models/chat", 31000, "chat", {"gpus_per_node": 2}, Path("/tmp/x"))
    joined = " ".join(argv)
    assert argv[0] == "text-generation-launcher" and "--model-id /models/chat" in joined
    assert "--port 31000 --num-shard 2 --master-port 31001 --shard-uds-path /tmp/x/tgi-server" in joined
    assert "--max-total-tokens 1024" in joined and "--dtype bfloat16" in joined and "--speculate 2" in joined


TGI_ENV = ("+cluster.environments={tgi: {container_image: 'ghcr.io#huggingface/text-generation-inference:3.3.4', "
           "python: /opt/conda/bin/python}}")


def test_golden_sbatch_of_a_tgi_server(tmp_path):
    """The image and the model folder (read-only) on the srun line; the task's python is the image's."""
    plan = plan_of("pipeline=serve", "cluster=dev", "pipeline.vars.model=/shared/models/chat", "pipeline.vars.gpus=2",
                   "pipeline.vars.tensor_parallel=2", f"{KEY}.engine=tgi", TGI_ENV, "cluster.hub_cache=/shared/hub")
    assert plan.stages["serve"].environment["name"] == "tgi"
    req = next(r for r in build_requests(plan, {"serve": [0]}, 1001) if r.stage == "serve")
    text = render_script(plan, req, Path("/shared/runs/RUN"), "RUN").replace(str(PROJECT_ROOT), "<project>")
    golden = GOLDEN / "serve_tgi.sbatch"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()
    srun = next(line for line in text.splitlines() if line.startswith("srun "))
    assert ("--container-image=ghcr.io#huggingface/text-generation-inference:3.3.4' --container-mounts="
            "/shared/runs:/shared/runs,/shared/hub:/shared/hub,/shared/models/chat:/shared/models/chat:ro") in srun
    assert "/opt/conda/bin/python -u -m jobs.task" in srun and "--gpus-per-node=2" in text


def test_tgi_without_an_image_is_refused_before_submission():
    from launcher.kinds.serve import KIND

    plan = plan_of("pipeline=serve", "cluster=dev", "pipeline.vars.model=/nope", "pipeline.vars.gpus=1",
                   f"{KEY}.engine=tgi")
    errors = {e.key: e.message for e in KIND.preflight(plan, plan.stages["serve"])}
    assert "no container_image" in errors[f"{KEY}.engine"] and errors[f"{KEY}.model"] == "/nope does not exist"


def test_a_client_learns_that_its_server_failed_while_serving(tmp_path):
    ep = layout.endpoint_file(tmp_path, "srv", 0)
    layout.atomic_write_json(ep, {"state": "ready", "url": "http://n1:1/v1", "model": "m"})
    task = SimpleNamespace(spec={"servers": {"srv": {}}}, run_dir=tmp_path, point=0)
    got = []
    client_side.watch_servers(task, got.append, every_s=0.1)
    time.sleep(0.5)
    assert got == []
    layout.atomic_write_json(ep, {"state": "failed", "error": "the llama.cpp server exited with status -9 while serving"})
    deadline = time.time() + 5
    while not got and time.time() < deadline:
        time.sleep(0.1)
    assert got and "server srv failed while serving (the llama.cpp server exited with status -9" in got[0]
