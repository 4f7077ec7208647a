"""kind=quantize without llama.cpp: planning (pipeline=quantize), the checks before submission (types,
GPU methods on a CPU profile, the model folder, the environment's converter and LLAMA_FTYPE names),
the pieces the node uses that need no library (the pre-tokenizer choice, the Ollama template, bits
per byte, the environment build's sdist step, the report's rows). End to end with llama.cpp:
tests/integration/test_quantize.py."""
from __future__ import annotations

import io
import json
import math
import tarfile
from pathlib import Path
from types import SimpleNamespace

import jinja2
import pytest

from jobs.adapters import bits_per_byte as bpb
from jobs.adapters import gguf, ollama
from jobs.demo.tiny_model import CHAT_TEMPLATE
from launcher.config import env_share
from launcher.config.compose import PROJECT_ROOT, compose
from launcher.errors import LauncherError
from launcher.kinds import quantize as kind
from launcher.plan.model import build_plan
from launcher.reports import quantization
from plan_errors import errors_of

Q = ["pipeline=quantize", "cluster=local", "pipeline.vars.model=/m"]
S = "pipeline.stages"


def plan_of(*overrides):
    return build_plan([compose([*Q, *overrides])], [[]])


# -- plan -----------------------------------------------------------------------------------------------
def test_the_example_plans_two_gguf_stages_in_the_llamacpp_environment_with_their_ftypes():
    plan = plan_of()
    q8, q4 = plan.stages["q8"], plan.stages["q4"]
    assert q8.environment["name"] == q4.environment["name"] == "llamacpp"
    assert q8.payloads[0]["quantize"]["type"] == "q8_0" and q4.payloads[0]["quantize"]["type"] == "q4_k_m"
    assert kind.KIND.spec_extra(plan, q4) == {"gpus": 0, "cpus": 2, "ftypes": {"q4_k_m": "MOSTLY_Q4_K_M"}}
    (text,) = kind.KIND.describe(plan, q4, Path("."))
    assert "gguf q4_k_m" in text and "64 documents" in text and "Modelfile" in text


def test_an_unknown_type_is_refused_with_the_valid_ones_and_the_closest():
    errs = errors_of(*Q, f"{S}.q4.quantize.type=q4_km")
    msg = errs[("q4", f"{S}.q4.quantize.type")]
    assert "unknown gguf type 'q4_km'" in msg and "q8_0" in msg and "did you mean 'q4_k_m'" in msg


def test_a_type_that_needs_an_importance_matrix_is_refused():
    msg = errors_of(*Q, f"{S}.q4.quantize.type=iq2_xxs")[("q4", f"{S}.q4.quantize.type")]
    assert "importance matrix" in msg


@pytest.mark.parametrize("method, qtype", [("bnb", "nf4"), ("bnb", "int8")])
def test_gpu_methods_are_refused_on_a_profile_without_gpus_naming_the_method(method, qtype):
    errs = errors_of(*Q, f"{S}.q8.quantize.method={method}", f"{S}.q8.quantize.type={qtype}")
    assert "needs a GPU" in errs[("q8", f"{S}.q8.quantize.method")]
    assert "resources.gpus_per_node is 0" in errs[("q8", f"{S}.q8.quantize.method")]


def test_bnb_plans_with_a_gpu():
    plan = plan_of(f"{S}.q8.quantize.method=bnb", f"{S}.q8.quantize.type=null", "pipeline.vars.gpus=1")
    assert kind.quant_type(plan.stages["q8"].payloads[0]["quantize"]) == "nf4"
    assert kind.KIND.spec_extra(plan, plan.stages["q8"])["gpus"] == 1


GPTQ = [f"{S}.q8.quantize.method=gptq", f"{S}.q8.quantize.type=null"]


@pytest.mark.parametrize("gpus", [0, 1])
def test_gptq_plans_on_cpu_and_gpu_profiles_in_the_gptq_environment(gpus, tmp_path):
    rows = tmp_path / "calib.jsonl"
    rows.write_text('{"text": "a b c"}\n')
    plan = plan_of(*GPTQ, f"{S}.q8.quantize.calibration={rows}", f"pipeline.vars.gpus={gpus}")
    q8 = plan.stages["q8"]
    assert q8.environment["name"] == "gptq" and plan.stages["q4"].environment["name"] == "llamacpp"
    assert kind.quant_type(q8.payloads[0]["quantize"]) == "int4"
    assert ("pipeline.stages.q8.quantize.method", "gptqmodel:GPTQModel") in kind.KIND.targets(q8)
    (text,) = kind.KIND.describe(plan, q8, Path("."))
    assert "gptq int4" in text and f"128 documents of {rows} (seed 0)" in text and "group size 128" in text
    assert not [e for e in kind.KIND.preflight(plan, q8) if "calibration" in e.key]


def test_gptq_without_calibration_or_with_bad_numbers_is_refused_naming_the_key():
    errs = errors_of(*Q, *GPTQ, f"{S}.q8.quantize.calibration_samples=0", f"{S}.q8.quantize.group_size=100")
    assert "calibrates on the run's own text" in errs[("q8", f"{S}.q8.quantize.calibration")]
    assert "must be >= 1" in errs[("q8", f"{S}.q8.quantize.calibration_samples")]
    assert "power of two" in errs[("q8", f"{S}.q8.quantize.group_size")]
    assert "unknown gptq type 'q8_0'" in errors_of(*Q, *GPTQ[:1], f"{S}.q8.quantize.calibration=/c")[
        ("q8", f"{S}.q8.quantize.type")]


def test_preflight_names_calibration_data_that_is_missing_or_holds_no_jsonl(tmp_path):
    plan = plan_of(*GPTQ, f"{S}.q8.quantize.calibration={tmp_path / 'nothing'}")
    (err,) = [e for e in kind.KIND.preflight(plan, plan.stages["q8"]) if e.key.endswith("quantize.calibration")]
    assert "does not exist" in str(err) and err.stage == "q8"
    (tmp_path / "empty").mkdir()
    plan = plan_of(*GPTQ, f"{S}.q8.quantize.calibration={tmp_path / 'empty'}")
    assert any("holds no JSONL" in str(e) for e in kind.KIND.preflight(plan, plan.stages["q8"]))


def test_the_calibration_sample_is_seeded_in_file_order_and_skips_empty_texts(tmp_path):
    from jobs.kinds import quantize as runner

    (tmp_path / "d").mkdir()
    for i in range(3):  # a datatrove folder: documents with metadata, in files sorted by path
        (tmp_path / "d" / f"{i:05d}.jsonl").write_text("".join(
            json.dumps({"text": f"doc {i}-{j}" if j % 5 else "", "id": f"{i}-{j}", "metadata": {}}) + "\n"
            for j in range(10)))
    q = {"calibration": str(tmp_path / "d"), "calibration_samples": 6, "calibration_seed": 0}
    task = FakeTask(tmp_path)
    a, b = runner.calibration_texts(task, q), runner.calibration_texts(task, q)
    other = runner.calibration_texts(task, {**q, "calibration_seed": 1})
    assert a == b and len(a) == 6 and a != other and "" not in a
    assert a == sorted(a, key=lambda t: tuple(map(int, t.split()[1].split("-"))))  # file order
    assert "6 of 24 documents" in task.logs[-3]
    assert len(runner.calibration_texts(task, {**q, "calibration_samples": 100})) == 24
    (tmp_path / "blank.jsonl").write_text('{"text": " "}\n')
    with pytest.raises(runner.QuantizeConfigError, match="quantize.calibration: .* holds no non-empty"):
        runner.calibration_texts(task, {**q, "calibration": str(tmp_path / "blank.jsonl")})


def test_a_bnb_type_on_gguf_and_bad_numbers_are_refused():
    errs = errors_of(*Q, f"{S}.q8.quantize.type=nf4", f"{S}.q4.quantize.eval_samples=-1", f"{S}.q4.tasks=2")
    assert "unknown gguf type 'nf4'" in errs[("q8", f"{S}.q8.quantize.type")]
    assert "must be >= 0" in errs[("q4", f"{S}.q4.quantize.eval_samples")]
    assert "must be 1" in errs[("q4", f"{S}.q4.tasks")]


# -- preflight ------------------------------------------------------------------------------------------
def fake_env(root: Path, converter: bool = True, ftypes=("MOSTLY_Q8_0", "MOSTLY_F16")) -> Path:
    """A venv-shaped folder: bin/python, llama_cpp/llama_cpp.py with LLAMA_FTYPE lines, the converter."""
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "python").write_text("#!/bin/sh\n")
    (root / "bin" / "python").chmod(0o755)
    site = root / "lib" / "python3.11" / "site-packages" / "llama_cpp"
    site.mkdir(parents=True)
    (site / "llama_cpp.py").write_text("".join(f"LLAMA_FTYPE_{f} = {i}\n" for i, f in enumerate(ftypes)))
    if converter:
        (root / kind.CONVERTER).parent.mkdir(parents=True)
        (root / kind.CONVERTER).write_text("# converter\n")
    return root / "bin" / "python"


def model_dir(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "config.json").write_text("{}")
    return root


def test_preflight_names_a_missing_model_and_a_folder_that_is_not_a_model(tmp_path):
    plan = plan_of(f"pipeline.vars.model={tmp_path / 'nothing'}")
    (err,) = [e for e in kind.KIND.preflight(plan, plan.stages["q8"]) if e.key.endswith("quantize.model")]
    assert "does not exist" in str(err) and err.stage == "q8"
    (tmp_path / "empty").mkdir()
    plan = plan_of(f"pipeline.vars.model={tmp_path / 'empty'}")
    assert any("no config.json" in str(e) for e in kind.KIND.preflight(plan, plan.stages["q8"]))


def test_preflight_reads_the_environment_converter_and_its_llama_cpp_types_without_importing_it(tmp_path):
    model = model_dir(tmp_path / "model")
    plan = plan_of(f"pipeline.vars.model={model}")
    q8, q4 = plan.stages["q8"], plan.stages["q4"]
    q8.environment["python"] = q4.environment["python"] = str(fake_env(tmp_path / "env"))
    assert kind.KIND.preflight(plan, q8) == []  # q8_0 is there
    (err,) = kind.KIND.preflight(plan, q4)
    assert err.key == f"{S}.q4.quantize.type" and "LLAMA_FTYPE_MOSTLY_Q4_K_M" in str(err)
    q8.environment["python"] = str(fake_env(tmp_path / "bare", converter=False))
    (err,) = kind.KIND.preflight(plan, q8)
    assert err.key == "cluster.environments.llamacpp" and "convert_hf_to_gguf.py does not exist" in str(err)


def test_every_gguf_type_is_a_llama_cpp_ftype_of_the_built_environment():
    prefix = PROJECT_ROOT / ".envs" / "llamacpp"
    names = kind.llama_cpp_ftypes(str(prefix))
    if names is None:
        pytest.skip("the llamacpp environment is not built")
    assert set(kind.GGUF_TYPES.values()) <= set(names)


# -- node pieces ----------------------------------------------------------------------------------------
def test_the_pre_tokenizer_is_the_llama_cpp_one_whose_regex_is_the_tokenizers_own():
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}
    assert gguf.pre_tokenizer_for({"pre_tokenizer": byte_level}) == "gpt-2"
    digits = {"type": "Digits", "individual_digits": True}
    assert gguf.pre_tokenizer_for({"pre_tokenizer": {"type": "Sequence", "pretokenizers": [digits, byte_level]}}) \
        == "refact"
    assert gguf.pre_tokenizer_for({"pre_tokenizer": {**byte_level, "add_prefix_space": True}}) is None
    assert gguf.pre_tokenizer_for({"pre_tokenizer": {"type": "Whitespace"}}) is None


def jinja_apply(template: str, **extra):
    t = jinja2.Environment().from_string(template)
    return lambda msgs, gen: t.render(messages=msgs, add_generation_prompt=gen, **extra)


def test_the_ollama_template_of_the_demo_chat_template_renders_what_the_jinja_template_does():
    apply = jinja_apply(CHAT_TEMPLATE)
    p = ollama.pieces(apply)
    assert p["user_pre"] == "<|user|>\n" and p["gen"] == p["assistant_pre"] == "<|assistant|>\n"
    convo = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    assert ollama.emulate(p, convo) == apply(convo, True)
    text, has = ollama.modelfile(apply, "<|endoftext|>", "model.gguf", stage="q8", run_id="r", source="/m", name="q8")
    assert has and "FROM ./model.gguf\n" in text and 'TEMPLATE """{{ range' in text
    assert 'PARAMETER stop "<|endoftext|>"' in text and 'PARAMETER stop "<|user|>"' in text
    assert "{{-" not in text  # trim markers would eat the pieces' newlines


def test_a_template_that_is_not_per_message_pieces_gets_no_ollama_template():
    once = jinja_apply("{{ bos_token }}{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}", bos_token="<s>")
    assert ollama.template_for(once) is None  # the BOS comes once, before the first message only
    text, has = ollama.modelfile(once, "</s>", "model.gguf", stage="q", run_id="r", source="/m", name="q")
    assert not has and "TEMPLATE" not in text.split("\n", 2)[2] and 'PARAMETER stop "</s>"' in text


def test_bits_per_byte_scores_every_token_once_across_windows():
    calls = []

    def score(ids):
        calls.append(ids)
        return math.log(2) * (len(ids) - 1)  # 1 bit per predicted token

    out = bpb.total(score, 0, [[1, 2, 3, 4, 5]], ["abcdefghij"], window=2)
    assert calls == [[0, 1, 2], [0, 3, 4], [0, 5]]
    assert out["tokens"] == 5 and out["bytes"] == 10 and out["bits_per_byte"] == pytest.approx(0.5)
    with pytest.raises(InterruptedError):
        bpb.total(score, 0, [[1]], ["a"], 2, should_stop=lambda: True)


def test_nll_of_logits_is_the_cross_entropy_of_the_next_tokens():
    import numpy as np

    logits = np.log(np.array([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [1 / 3] * 3]))
    assert bpb.nll_of(logits, [0, 1, 2]) == pytest.approx(-math.log(0.25) - math.log(0.1))
    assert bpb.window_of(512) == 511 and bpb.window_of(None, cap=64) == 63 and bpb.window_of(4096) == 511


# -- the environment build's sdist step -----------------------------------------------------------------
def make_sdist(path: Path) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in (("pkg-1.0/vendor/tool.py", b"print('tool')\n"), ("pkg-1.0/vendor/lib/a.py", b"A = 1\n"),
                           ("pkg-1.0/README", b"x")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_share_lines_are_checked_and_files_and_folders_are_extracted_and_replaced(tmp_path):
    share = tmp_path / "x.share.txt"
    share.write_text("# comment\npkg vendor/tool.py share/t/tool.py\npkg vendor/lib share/t/lib  # a folder\n")
    assert env_share.entries(share) == [("pkg", "vendor/tool.py", "share/t/tool.py"), ("pkg", "vendor/lib", "share/t/lib")]
    sdist, env = make_sdist(tmp_path / "pkg-1.0.tar.gz"), tmp_path / "env"
    (env / "share/t/lib").mkdir(parents=True)
    (env / "share/t/lib/stale.py").write_text("old")
    env_share.extract(sdist, [(s, d) for _, s, d in env_share.entries(share)], env)
    assert (env / "share/t/tool.py").read_text() == "print('tool')\n"
    assert sorted(p.name for p in (env / "share/t/lib").iterdir()) == ["a.py"]
    with pytest.raises(LauncherError, match="has no vendor/missing"):
        env_share.extract(sdist, [("vendor/missing", "share/m")], env)
    for bad in ("pkg ../etc/passwd share/x\n", "pkg a\n", "pkg a /abs\n"):
        share.write_text(bad)
        with pytest.raises(LauncherError, match="want"):
            env_share.entries(share)


def test_the_share_file_is_a_requirement_file_of_the_llamacpp_build():
    from launcher.config import environments

    names = [f.name for f in environments.spec_files("llamacpp")]
    assert names[0] == "llamacpp.txt" and names[-1] == "llamacpp.share.txt"


# -- report ---------------------------------------------------------------------------------------------
def test_the_report_reads_each_quantize_result_and_skips_other_results(tmp_path):
    run = tmp_path / "run"
    q = {"method": "gguf", "type": "q8_0", "size_mb": 1.5, "original_size_mb": 4.0,
         "bits_per_byte": {"original": 2.0, "quantized": 2.01, "delta": 0.01, "relative": 0.005},
         "tokenizer_agreement": 1.0}
    for stage, body in (("q8", {"quantization": q}), ("train", {"final_step": 3})):
        out = run / "stages" / stage / "out" / "0" / "0"
        out.mkdir(parents=True)
        (out / "result.json").write_text(json.dumps(body))
    (row,) = quantization.rows([SimpleNamespace(id="r1", path=run)])
    assert row["stage"] == "q8" and row["point"] == 0 and row["bpb_quantized"] == 2.01
    assert "2.0000 -> 2.0100 (+0.0100)" in quantization.lines([row])[0]
    from launcher.reports.report import write_report

    html = write_report([], tmp_path / "report", "run r1", quantized=[row]).read_text()
    assert 'id="quantization"' in html and "q8_0" in html
    assert json.loads((tmp_path / "report" / "quantization.json").read_text()) == [row]


def test_the_card_has_a_quantization_section_with_or_without_bits_per_byte(tmp_path):
    from jobs.adapters import hub_card

    q = {"method": "gguf", "type": "q4_k_m", "files": ["model.gguf"], "size_mb": 0.79, "original_size_mb": 4.99}
    card = hub_card.render(tmp_path, "q4", 0, {"repo_id": "q4", "repo_type": "model"}, "/m", quantization=q)
    assert "quantized by its stage `q4`" in card and "Method `gguf`, type `q4_k_m`: model.gguf, 0.8 MB (5.0 MB" in card
    assert "Bits per byte" not in card
    q.update(bits_per_byte={"original": 6.614, "quantized": 6.6038, "delta": -0.0102}, eval={"documents": 16, "path": "p"})
    card = hub_card.render(tmp_path, "q4", 0, {"repo_id": "q4", "repo_type": "model"}, "/m", quantization=q)
    assert "original 6.6140, quantized 6.6038 (-0.0102)" in card
    plain = hub_card.render(tmp_path, "pub", 0, {"repo_id": "o/r", "repo_type": "model"}, "/m")
    assert "published by its stage" in plain and "## Quantization" not in plain


# -- resuming: a requeued task redoes no finished step ----------------------------------------------------
class FakeTask:
    def __init__(self, tmp_path, stop=False):
        from jobs.context import Requeue

        self.ran, self.logs, self.stop = [], [], stop
        self.stage, self.spec = "q8", {"cpus": 2}
        self.ctx = SimpleNamespace(should_stop=lambda: self.stop, requeue=self._requeue)
        self._Requeue = Requeue

    def _requeue(self):
        raise self._Requeue()

    def log(self, msg):
        self.logs.append(msg)

    def environment(self):
        return {}

    def run_child(self, argv, env, failure):
        self.ran.append(argv)


def test_a_step_with_its_marker_is_not_run_again_and_a_measurement_is_read_back(tmp_path):
    from jobs.context import Requeue
    from jobs.kinds import quantize as runner

    task, made = FakeTask(tmp_path), tmp_path / "model-f16.gguf"
    made.write_text("gguf")
    runner.step(task, tmp_path / "convert.done", "convert", ["python", "convert"], made)
    runner.step(task, tmp_path / "convert.done", "convert", ["python", "convert"], made)
    assert task.ran == [["python", "convert"]] and "done by an earlier attempt" in task.logs[-1]
    made.unlink()  # its file gone (moved to the output by an attempt that failed later): run again
    runner.step(task, tmp_path / "convert.done", "convert", ["python", "convert"], made)
    assert len(task.ran) == 2
    runner.step(task, tmp_path / "convert.done", "convert", ["python", "convert", "--other"], made)
    assert len(task.ran) == 3  # another command: its marker does not count
    calls = []
    first = runner.scored(task, tmp_path / "eval.json", {"n": 16}, lambda: calls.append(1) or {"bits_per_byte": 1.5})
    again = runner.scored(task, tmp_path / "eval.json", {"n": 16}, lambda: calls.append(1) or {"bits_per_byte": 9.9})
    assert first == again == {"bits_per_byte": 1.5} and calls == [1]
    assert runner.scored(task, tmp_path / "eval.json", {"n": 8}, lambda: {"bits_per_byte": 2.0}) == {"bits_per_byte": 2.0}

    def stopped():
        raise InterruptedError("stop requested")

    with pytest.raises(Requeue):
        runner.scored(task, tmp_path / "eval-2.json", {}, stopped)
    assert not (tmp_path / "eval-2.json").exists()


def test_a_gptq_folder_an_earlier_attempt_made_from_the_same_inputs_is_not_made_again(tmp_path, monkeypatch):
    from jobs.kinds import quantize as runner

    monkeypatch.setenv("GPTQMODEL_CPU_WORKERS", "2")  # what the task sets is not left in this process

    rows = tmp_path / "c.jsonl"
    rows.write_text("".join(json.dumps({"text": f"t{i}"}) + "\n" for i in range(4)))
    q = {"calibration": str(rows), "calibration_samples": 2, "calibration_seed": 0, "group_size": 64}
    dest = tmp_path / "model-gptq-int4"
    dest.mkdir()
    (dest / "config.json").write_text("{}")
    key = {"model": "/m", "bits": 4, "group_size": 64, "texts": 2, "calibration": str(rows), "seed": 0, "device": "cpu"}
    (tmp_path / "model-gptq-int4.done").write_text(json.dumps({"key": key, "seconds": 3.5}))
    task = FakeTask(tmp_path)
    assert runner.gptq_quantize(task, q, "/m", 4, dest, "cpu") == 3.5  # gptqmodel is not even imported here
    assert "done by an earlier attempt" in task.logs[-1]
    with pytest.raises(ImportError):  # another group size: made again (no gptqmodel in the launcher's venv)
        runner.gptq_quantize(task, {**q, "group_size": 128}, "/m", 4, dest, "cpu")
