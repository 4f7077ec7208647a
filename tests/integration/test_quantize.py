"""kind=quantize end to end with llama.cpp (the llamacpp stage environment): pipeline=quantize on the tiny
chat model made here (jobs/demo/tiny_model.py, hidden 256 so that every matrix row is one 256-value
k-quant block and q4_k_m really is q4_K, not a fallback), q8_0 and q4_k_m as two stages.

Asserted: both stages COMPLETED; each model.gguf loads in llama_cpp (in the stage environment) with the
model's vocabulary; llama.cpp's tokenizer from the file gives the Hugging Face ids on every scored
document (the pre-tokenizer the converter did not know was chosen right: "gpt-2"); bits per byte of the
original and the quantized model are both in result.json and within the stated margins (MARGIN: the
quantized model's bits per byte over the original's, relative); the Modelfile and the card are there;
`launcher report` lists both. 99 s locally on 2 shared cores (two conversions of ~15 s each, 16
documents scored four times, the rest interpreters starting): slow, and the test of the acceptance
item, so not extended.

The same pipeline on the dev cluster: test_quantize_on_slurm (written; run it where the dev cluster is
up: `pytest tests/integration/test_quantize.py -m slurm`)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT

LLAMACPP_PYTHON = ROOT / ".envs" / "llamacpp" / "bin" / "python"
# |quantized - original| / original bits per byte a quantization may cost on the (sharpened) tiny model.
# Measured here (16 documents of the demo's held-out text, seed 0; original 6.614): q8_0 -0.01 %, q4_k_m
# -0.16 % (on a random model the rounding noise can as well lower it; docs/quantize.md). The margins leave
# room for other CPUs without letting a broken conversion through.
MARGIN = {"q8": 0.005, "q4": 0.02}
SAMPLES = 16


# Every matrix of the random model times 8: its logits' std goes from ~0.3 (near uniform: any model,
# broken or not, scores ~log2(vocab) bits per token) to ~2.6, so that a quantization error shows.
SHARPEN = ("import sys, torch; from transformers import AutoModelForCausalLM\n"
           "m = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype='float32')\n"
           "with torch.no_grad():\n    [p.mul_(8.0) for p in m.parameters() if p.dim() == 2]\n"
           "m.save_pretrained(sys.argv[1])")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, llamacpp_python) -> Path:
    assert llamacpp_python == LLAMACPP_PYTHON  # built (conftest), a no-op when it is up to date
    out = tmp_path_factory.mktemp("model") / "tiny256"
    env = {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    for argv in (["-m", "jobs.demo.tiny_model", str(out), "--hidden", "256"], ["-c", SHARPEN, str(out)]):
        p = subprocess.run([str(LLAMACPP_PYTHON), *argv], capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
        assert p.returncode == 0, p.stderr[-3000:]
    return out


def loads(gguf: Path) -> dict:
    """What llama_cpp says of a GGUF file, in the stage environment."""
    code = ("import sys, json, llama_cpp; m = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=64, verbose=False)\n"
            "print(json.dumps({'n_vocab': m.n_vocab(), 'meta': {k: v for k, v in m.metadata.items() if k in "
            "('general.file_type', 'tokenizer.ggml.pre', 'tokenizer.ggml.model')}}))")
    p = subprocess.run([str(LLAMACPP_PYTHON), "-c", code, str(gguf)], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def check_run(run: Path, model: Path) -> dict:
    """The assertions both tests make on a finished run; {stage: result}."""
    vocab = json.loads((model / "config.json").read_text())["vocab_size"]
    results = {}
    for stage, qtype, ftype in (("q8", "q8_0", "7"), ("q4", "q4_k_m", "15")):
        out = run / "stages" / stage / "out" / "0" / "0"
        r = json.loads((out / "result.json").read_text())
        q = r["quantization"]
        assert q["method"] == "gguf" and q["type"] == qtype and q["files"] == ["model.gguf"]
        info = loads(out / "model.gguf")
        assert info["n_vocab"] == vocab and info["meta"]["tokenizer.ggml.pre"] == "gpt-2"
        assert info["meta"]["general.file_type"] == ftype  # LLAMA_FTYPE_MOSTLY_Q8_0 / _Q4_K_M
        assert q["size_mb"] < q["f16_size_mb"] and q["size_mb"] == pytest.approx((out / "model.gguf").stat().st_size / 1e6)
        b = q["bits_per_byte"]
        assert b["original"] > 0 and b["quantized"] > 0 and q["eval"]["documents"] == SAMPLES
        assert abs(b["relative"]) <= MARGIN[stage], b
        assert q["tokenizer_agreement"] == 1.0
        modelfile = (out / "Modelfile").read_text()
        assert "FROM ./model.gguf" in modelfile and 'TEMPLATE """' in modelfile and r["modelfile"]["template"]
        assert "## Quantization" in (out / "README.md").read_text()
        results[stage] = r
    return results


@pytest.mark.slow
@pytest.mark.extended  # ~1.5 min; the CI tier runs the same pipeline on the dev cluster (below)
def test_quantize_gguf_q8_0_and_q4_k_m_locally(cli, tiny_model):
    p = cli("run", "pipeline=quantize", "cluster=local", "wait=true", "poll_s=1", f"pipeline.vars.model={tiny_model}",
            f"pipeline.vars.eval_samples={SAMPLES}", timeout=900)
    st = cli.status()
    assert st["state"] == "COMPLETED" and all(s["state"] == "COMPLETED" for s in st["stages"]), p.stdout[-3000:]
    results = check_run(cli.run_dir(), tiny_model)
    report = cli("report", "latest")
    assert "q8[0] gguf q8_0" in report.stdout and "q4[0] gguf q4_k_m" in report.stdout, report.stdout
    print(json.dumps({s: {"bits_per_byte": r["quantization"]["bits_per_byte"], "seconds": r["seconds"]}
                      for s, r in results.items()}))


@pytest.mark.slow
def test_quantize_on_slurm(dcli, tiny_model):
    """The same pipeline as two Slurm jobs on the dev cluster."""
    dcli("run", "pipeline=quantize", "cluster=dev", f"pipeline.vars.model={tiny_model}",
         f"pipeline.vars.eval_samples={SAMPLES}")
    st = dcli.wait(timeout=1200)
    assert st["state"] == "COMPLETED" and all(s["state"] == "COMPLETED" for s in st["stages"]), st
    check_run(dcli.run_dir(), tiny_model)
