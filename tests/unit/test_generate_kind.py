"""kind=generate without vLLM: planning (pipeline=generate_demo), the records and their shards
(jobs/runtime/prompt_records.py), resuming inside a shard (jobs/kinds/generate.py with a stand-in for
vllm.LLM, the one thing a unit test cannot run), the template, schema and tensor-parallel checks, and
the golden script of a GPU stage. End to end with the tiny model: tests/integration/test_generate.py."""
from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from jobs.context import Requeue, TaskContext
from jobs.kinds import generate as runner
from jobs.runtime import jsonl, prompt_records
from launcher.config.compose import PROJECT_ROOT, compose
from launcher.errors import LauncherError
from launcher.kinds import generate as kind
from launcher.plan.model import build_plan
from launcher.plan.render import build_requests, render_script

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
VLLM_PYTHON = PROJECT_ROOT / ".envs" / "vllm" / "bin" / "python"


def plan_of(*overrides, cluster="local"):
    return build_plan([compose(["pipeline=generate_demo", f"cluster={cluster}", *overrides])], [[]])


def errors_of(*overrides) -> str:
    with pytest.raises(LauncherError) as e:  # ConfigError, or ConfigErrors holding several
        plan_of(*overrides)
    return str(e.value)


def write_jsonl(path: Path, recs) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


# -- planning ---------------------------------------------------------------------------------------------
def test_the_demo_plans_two_generate_stages_with_their_shards_and_environment():
    plan = plan_of()
    synth, annotate = plan.stages["synth"], plan.stages["annotate"]
    assert synth.tasks_per_point == 4 and annotate.tasks_per_point == 2
    assert synth.environment["name"] == "vllm"
    g = synth.payloads[0]["generate"]
    assert g["chat"] and g["prompt_file"] == "generate/textbook.j2" and g["sampling"]["max_tokens"] == 48
    assert len(prompt_records.seed_records(g["seeds"])) == 30
    assert annotate.payloads[0]["generate"]["guided"]["choice"] == ["yes", "no"]


# -- records and shards -----------------------------------------------------------------------------------
def test_shards_are_disjoint_cover_the_input_and_ids_come_from_the_line_when_absent(tmp_path):
    f = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"p{i}", **({"id": f"x{i}"} if i % 3 else {})}
                                           for i in range(10)])
    g = {"input": str(f), "id_key": "id"}
    shards = [list(prompt_records.shard(g, k, 4)) for k in range(4)]
    ids = [rid for s in shards for rid, _ in s]
    assert sorted(ids) == sorted({f"x{i}" if i % 3 else f"p.jsonl:{i}" for i in range(10)}) and len(ids) == 10
    assert [rid for rid, _ in shards[1]] == ["x1", "x5", "p.jsonl:9"]  # positions 1, 5, 9
    assert list(prompt_records.shard(g, 1, 4)) == shards[1]  # deterministic


def test_a_datatrove_folder_is_read_in_path_order_with_metadata_flattened(tmp_path):
    (tmp_path / "d").mkdir()
    for rank in (1, 0):
        with gzip.open(tmp_path / "d" / f"0000{rank}.jsonl.gz", "wt") as f:
            f.write(json.dumps({"text": f"doc{rank}", "id": f"r{rank}", "metadata": {"url": f"u{rank}"}}) + "\n")
    (tmp_path / "d" / ".partial.jsonl").write_text("{}\n")  # a hidden file is not input
    recs = list(prompt_records.shard({"input": str(tmp_path / "d")}, 0, 1))
    assert recs == [("r0", {"url": "u0", "text": "doc0", "id": "r0"}), ("r1", {"url": "u1", "text": "doc1", "id": "r1"})]


def test_seed_records_are_the_whole_product_in_an_order_fixed_by_the_seed():
    seeds = {"topics": ["a", "b", "c"], "styles": ["s1", "s2"], "audiences": ["kids"], "per_combination": 2, "seed": 3}
    one, again, other = (prompt_records.seed_records(s) for s in (seeds, dict(seeds), dict(seeds, seed=4)))
    assert one == again and one != other and len(one) == 12 and len({rid for rid, _ in one}) == 12
    assert sorted(r["topic"] + r["style"] + str(r["sample"]) for _, r in one) == \
        sorted(t + s + str(k) for t in "abc" for s in ("s1", "s2") for k in (0, 1))
    assert len(prompt_records.seed_records(dict(seeds, limit=5))) == 5


def test_a_request_seed_depends_on_the_stage_seed_and_the_id_only():
    assert prompt_records.request_seed(7, "a") == prompt_records.request_seed(7, "a")
    assert prompt_records.request_seed(7, "a") != prompt_records.request_seed(7, "b")
    assert prompt_records.request_seed(None, "a") is None


# -- template, schema, tensor parallelism: refused before submission --------------------------------------
def test_an_undefined_template_variable_with_seed_lists_is_refused_at_plan_time():
    msg = errors_of("pipeline.stages.synth.generate.prompt_file=null",
                    "pipeline.stages.synth.generate.prompt='Write about {{ subject }}'")
    assert "pipeline.stages.synth.generate.prompt" in msg and "'subject' is undefined" in msg
    assert "['audience', 'sample', 'style', 'topic']" in msg


def test_an_undefined_template_variable_in_a_readable_input_is_refused_at_preflight(tmp_path):
    f = write_jsonl(tmp_path / "p.jsonl", [{"id": "a", "question": "why?"}])
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    plan = plan_of("~pipeline.stages.annotate", "pipeline.stages.synth.generate.seeds=null",
                   f"pipeline.stages.synth.generate.input={f}", "pipeline.stages.synth.generate.prompt_file=null",
                   "pipeline.stages.synth.generate.chat=false", f"pipeline.vars.model={model}")
    errs = kind.KIND.preflight(plan, plan.stages["synth"])  # the kind's part of preflight
    assert [e.key for e in errs] == ["pipeline.stages.synth.generate.prompt"]
    assert "'prompt' is undefined" in str(errs[0]) and "['id', 'question']" in str(errs[0])


def test_the_task_refuses_the_same_template_with_the_same_message(tmp_path):
    task = SimpleNamespace(stage="synth")
    g = {"prompt": "{{ prompt }}", "prompt_file": None}
    with pytest.raises(runner.GenerateConfigError) as e:
        runner.checked_template(task, g, {"id": "a", "question": "why?"})
    assert str(e.value).startswith("stage 'synth': pipeline.stages.synth.generate.prompt: 'prompt' is undefined")


@pytest.mark.parametrize("value,message", [
    ("'{\"type\": '", "not JSON"),
    ("5", "a JSON schema is an object or a boolean"),
])
def test_a_guided_schema_that_is_not_json_schema_is_refused_at_plan_time(value, message):
    msg = errors_of("pipeline.stages.annotate.generate.guided.choice=null",
                    f"pipeline.stages.annotate.generate.guided.json={value}")
    assert "pipeline.stages.annotate.generate.guided.json" in msg and message in msg


@pytest.mark.skipif(not VLLM_PYTHON.exists(), reason="the vllm stage environment is not built")
def test_jsonschema_in_the_stage_environment_checks_the_schema():
    problem, how = kind.schema_in_environment(str(VLLM_PYTHON), {"type": "nonsense"})
    assert how == "jsonschema" and "not a valid JSON schema" in problem and "nonsense" in problem
    assert kind.schema_in_environment(str(VLLM_PYTHON), {"type": "object", "properties": {"s": {"type": "integer"}}}) \
        == ("", "jsonschema")


def test_tensor_parallelism_over_the_stage_gpus_is_refused():
    msg = errors_of("pipeline.stages.synth.resources.gpus_per_node=2",
                    "pipeline.stages.synth.generate.tensor_parallel_size=4")
    assert "pipeline.stages.synth.generate.tensor_parallel_size: 4 GPUs per model but resources.gpus_per_node is 2" in msg
    assert "without GPUs" in errors_of("pipeline.stages.synth.generate.tensor_parallel_size=2")


def test_input_and_seeds_are_exclusive():
    assert "not both" in errors_of("pipeline.stages.synth.generate.input=/x.jsonl")


# -- golden: a GPU stage with tensor parallelism ----------------------------------------------------------
GPU = ["pipeline.stages.synth.resources.gpus_per_node=4", "pipeline.stages.synth.resources.partition=gpu",
       "pipeline.stages.synth.generate.tensor_parallel_size=4", "pipeline.vars.model=/shared/models/chat",
       "cluster.python=/env/bin/python", "cluster.environments.vllm.python=/envs/vllm/bin/python"]


def test_golden_sbatch_and_spec_of_a_tensor_parallel_generate_stage():
    plan = plan_of(*GPU, cluster="dev")
    req = next(r for r in build_requests(plan, {s: range(p.total_tasks) for s, p in plan.stages.items()}, 1001)
               if r.stage == "synth")
    text = render_script(plan, req, Path("/shared/runs/RUN"), "RUN").replace(str(PROJECT_ROOT), "<project>")
    golden = GOLDEN / "generate_tp4.sbatch"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()
    assert "#SBATCH --gpus-per-node=4\n" in text and "#SBATCH --array=0-3" in text
    assert "/envs/vllm/bin/python" in text and "--kill-on-bad-exit" not in text  # one process per task
    spec = kind.KIND.spec_extra(plan, plan.stages["synth"])
    assert spec == {"gpus": 4} and plan.stages["synth"].payloads[0]["generate"]["tensor_parallel_size"] == 4


# -- the runner: resume inside a shard --------------------------------------------------------------------
class FakeLLM:
    """Stands in for vllm.LLM: one completion per prompt, its text naming the prompt."""

    def __init__(self, stop_after=None, ctx=None):
        self.calls, self.stop_after, self.ctx = [], stop_after, ctx

    def generate(self, prompts, params, use_tqdm=False):
        self.calls.append(list(prompts))
        if self.stop_after is not None and len(self.calls) == self.stop_after:
            self.ctx.stop_requested.set()  # the stop signal arrives during this batch
        return [SimpleNamespace(prompt_token_ids=[1, 2], outputs=[SimpleNamespace(text=f"re:{p}", token_ids=[5, 6, 7],
                                                                                  finish_reason="length")])
                for p in prompts]


def fake_task(tmp_path: Path, index: int, tasks: int, g: dict, restarts=0) -> SimpleNamespace:
    ck, out = tmp_path / "ckpt" / str(index), tmp_path / f"out{restarts}"
    ck.mkdir(parents=True, exist_ok=True)
    out.mkdir(exist_ok=True)
    ctx = TaskContext(run_dir=tmp_path, run_id="R", stage="gen", task=index, index=index, num_tasks=tasks, point=0,
                      params={}, output_dir=out, checkpoint_dir=ck, inputs={}, restart_count=restarts)
    spec = {"run_dir": str(tmp_path), "stage": "gen", "parents": [], "stage_hashes": {}, "tasks_per_point": tasks}
    return SimpleNamespace(stage="gen", index=index, restarts=restarts, spec=spec, payload={"generate": g}, ctx=ctx,
                           final_out=out, terminated=False, point=0, log=lambda m: None,
                           export_environment=lambda: None)


@pytest.fixture
def no_vllm(monkeypatch):
    from jobs.adapters import vllm

    monkeypatch.setattr(vllm, "sampling_params", lambda s, seed, gk: {"seed": seed})
    monkeypatch.setattr(vllm, "structured_outputs", lambda guided, schema: {})


def gen_config(f: Path) -> dict:
    return {"model": "/m", "input": str(f), "seeds": None, "id_key": "id", "prompt": "Q: {{ prompt }}",
            "prompt_file": None, "chat": False, "system": None, "batch_size": 2, "keep": [],
            "sampling": {"temperature": 1.0, "top_p": 1.0, "max_tokens": 3, "n": 1, "seed": 0, "extra": {}},
            "guided": {"json": None, "choice": None}, "tensor_parallel_size": 1}


def test_a_stopped_shard_keeps_whole_batches_and_its_next_attempt_skips_them(tmp_path, monkeypatch, no_vllm):
    f = write_jsonl(tmp_path / "p.jsonl", [{"id": f"q{i}", "prompt": f"p{i}"} for i in range(12)])
    g = gen_config(f)
    first = fake_task(tmp_path, 1, 2, g)  # shard 1: q1 q3 q5 q7 q9 q11
    llm = FakeLLM(stop_after=2, ctx=first.ctx)
    monkeypatch.setattr(runner, "load_llm", lambda task, g, model: llm)
    with pytest.raises(Requeue):
        runner.run(first)
    partial = first.ctx.checkpoint_dir / runner.RESULTS
    assert [r["id"] for r in jsonl.read(partial)] == ["q1", "q3", "q5", "q7"]  # two whole batches
    with open(partial, "a") as fh:
        fh.write('{"id": "q9", "compl')  # a writer killed mid-line: that record was never made

    second = fake_task(tmp_path, 1, 2, g, restarts=1)
    llm2 = FakeLLM()
    monkeypatch.setattr(runner, "load_llm", lambda task, g, model: llm2)
    result = runner.run(second)
    assert llm2.calls == [["Q: p9", "Q: p11"]]  # only what the first attempt had not written
    out = jsonl.read(second.ctx.output_dir / runner.RESULTS)
    assert [r["id"] for r in out] == ["q1", "q3", "q5", "q7", "q9", "q11"]
    assert [r["attempt"] for r in out] == [0, 0, 0, 0, 1, 1]
    assert out[0]["completion"] == "re:Q: p1" and out[0]["completion_tokens"] == 3 and out[0]["prompt_tokens"] == 2
    assert result["resumed_with"] == 4 and [a["generated"] for a in result["attempts"]] == [4, 2]
    assert result["attempts"][0]["stopped"] and result["throughput"]["prompts_per_s"] > 0


def test_duplicate_ids_in_a_shard_are_refused_naming_the_key(tmp_path, no_vllm):
    f = write_jsonl(tmp_path / "p.jsonl", [{"id": "same", "prompt": "a"}, {"id": "same", "prompt": "b"}])
    with pytest.raises(runner.GenerateConfigError, match="generate.id_key: request id 'same' appears twice"):
        runner.run(fake_task(tmp_path, 0, 1, gen_config(f)))


def test_the_task_refuses_more_tensor_parallelism_than_the_gpus_it_sees(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    task = fake_task(tmp_path, 0, 1, {})
    task.spec["gpus"] = 4
    with pytest.raises(runner.GenerateConfigError, match="generate.tensor_parallel_size: 4 but this node shows "
                                                         "the task 2 GPU"):
        runner.load_llm(task, {"tensor_parallel_size": 4}, "/m")


def test_results_of_another_config_are_moved_aside_not_mixed_in(tmp_path, monkeypatch, no_vllm):
    f = write_jsonl(tmp_path / "p.jsonl", [{"id": f"q{i}", "prompt": f"p{i}"} for i in range(2)])
    g = gen_config(f)
    monkeypatch.setattr(runner, "load_llm", lambda task, g, model: FakeLLM())
    runner.run(fake_task(tmp_path, 0, 1, g))
    g2 = dict(g, prompt="Other: {{ prompt }}")
    llm = FakeLLM()
    monkeypatch.setattr(runner, "load_llm", lambda task, g, model: llm)
    second = fake_task(tmp_path, 0, 1, g2, restarts=1)
    result = runner.run(second)
    assert llm.calls == [["Other: p0", "Other: p1"]] and result["resumed_with"] == 0
    assert (second.ctx.checkpoint_dir / "generations.jsonl.stale-0").exists()


def test_llm_arguments_on_cpu_turn_off_compilation_and_chunked_prefill_and_keep_them_on_gpus():
    from jobs.adapters import vllm

    g = {"tensor_parallel_size": 2, "dtype": "bfloat16", "max_model_len": 512, "llm_args": {"seed": 3}}
    assert vllm.llm_kwargs(g, "/m", 0) == {"model": "/m", "tensor_parallel_size": 2, "dtype": "bfloat16",
                                           "max_model_len": 512, "enforce_eager": True,
                                           "enable_chunked_prefill": False, "seed": 3}
    assert vllm.llm_kwargs(g, "/m", 4) == {"model": "/m", "tensor_parallel_size": 2, "dtype": "bfloat16",
                                           "max_model_len": 512, "seed": 3}
