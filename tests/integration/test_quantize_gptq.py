"""kind=quantize method=gptq end to end on this CPU (the gptq stage environment, GPTQModel 7.6.0):
pipeline=quantize with its q8 stage switched to gptq int4 (group size 64) and q4 left out, on the
sharpened tiny model (test_quantize.py SHARPEN, hidden 256), calibrated on 32 documents drawn from a
demo corpus folder (jobs/demo/corpus.py: datatrove-style *.jsonl.gz, as a preprocess stage writes it).

Asserted: the stage COMPLETED; result.json has the method, bits, group size, the calibration sample and
bits per byte of both models on the same held-out documents within MARGIN; <output>/model is a GPTQ
folder (quantize_config.json bits 4) smaller than the original, which transformers loads (through
optimum, GPTQModel's torch kernel on the CPU) and generates from; `launcher report` lists the stage.

The dev-cluster run of the same: test_quantize_gptq_on_slurm (written here, run where the dev cluster is
up: `pytest tests/integration/test_quantize_gptq.py -m slurm`)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT
from test_quantize import SHARPEN

SAMPLES, CALIBRATION = 16, 32
# |quantized - original| / original bits per byte int4 GPTQ may cost on the sharpened tiny model
# (measured here: see docs/quantize.md); room for other CPUs without letting a broken model through.
MARGIN = 0.05
GPTQ = ["~pipeline.stages.q4", "pipeline.stages.q8.quantize.method=gptq", "pipeline.stages.q8.quantize.type=int4",
        "pipeline.stages.q8.quantize.group_size=64", f"pipeline.stages.q8.quantize.calibration_samples={CALIBRATION}"]
LOADS = ("import sys, json, torch; from transformers import AutoModelForCausalLM, AutoTokenizer\n"
         "m = AutoModelForCausalLM.from_pretrained(sys.argv[1], device_map='cpu'); tok = AutoTokenizer.from_pretrained(sys.argv[1])\n"
         "ids = tok('def main():', return_tensors='pt'); out = m.generate(**ids, max_new_tokens=8, do_sample=False)\n"
         "print(json.dumps({'new_tokens': out.shape[1] - ids['input_ids'].shape[1],\n"
         "                  'kernels': sorted({type(x).__name__ for x in m.modules() if 'Linear' in type(x).__name__})}))")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, gptq_python) -> tuple:
    """(the tiny model, a demo corpus folder), made in the gptq environment."""
    root = tmp_path_factory.mktemp("gptq")
    env = {"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    for argv in (["-m", "jobs.demo.tiny_model", str(root / "tiny256"), "--hidden", "256"],
                 ["-c", SHARPEN, str(root / "tiny256")],
                 ["-m", "jobs.demo.corpus", str(root / "corpus"), "--docs", "200", "--shards", "2"]):
        p = subprocess.run([str(gptq_python), *argv], capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
        assert p.returncode == 0, p.stderr[-3000:]
    return root / "tiny256", root / "corpus"


def check_run(run: Path, model: Path, corpus: Path, python: Path) -> dict:
    out = run / "stages" / "q8" / "out" / "0" / "0"
    r = json.loads((out / "result.json").read_text())
    q = r["quantization"]
    assert q["method"] == "gptq" and q["type"] == "int4" and q["bits"] == 4 and q["group_size"] == 64
    assert r["calibration"] == {"path": str(corpus), "samples": CALIBRATION, "seed": 0}
    assert json.loads((out / "model" / "quantize_config.json").read_text())["bits"] == 4
    assert 0 < q["size_mb"] < q["original_size_mb"]
    b = q["bits_per_byte"]
    assert b["original"] > 0 and b["quantized"] != b["original"] and q["eval"]["documents"] == SAMPLES
    assert abs(b["relative"]) <= MARGIN, b
    assert "## Quantization" in (out / "README.md").read_text()
    p = subprocess.run([str(python), "-c", LOADS, str(out / "model")], capture_output=True, text=True, timeout=600,
                       env={"HF_HUB_OFFLINE": "1", "GPTQMODEL_CPU_WORKERS": "2", "PATH": "/usr/bin:/bin"})
    assert p.returncode == 0, p.stderr[-3000:]
    loaded = json.loads(p.stdout.strip().splitlines()[-1])
    assert loaded["new_tokens"] > 0 and loaded["kernels"] != ["Linear"], loaded  # quantized layers, not float
    return r


@pytest.mark.slow
def test_quantize_gptq_int4_on_cpu_locally(cli, inputs, gptq_python):
    model, corpus = inputs
    p = cli("run", "pipeline=quantize", "cluster=local", "wait=true", "poll_s=1", f"pipeline.vars.model={model}",
            f"pipeline.vars.eval_samples={SAMPLES}", *GPTQ, f"pipeline.stages.q8.quantize.calibration={corpus}",
            timeout=1200)
    st = cli.status()
    assert st["state"] == "COMPLETED" and [s["state"] for s in st["stages"]] == ["COMPLETED"], p.stdout[-3000:]
    r = check_run(cli.run_dir(), model, corpus, gptq_python)
    report = cli("report", "latest")
    assert "q8[0] gptq int4" in report.stdout, report.stdout
    print(json.dumps({"bits_per_byte": r["quantization"]["bits_per_byte"], "seconds": r["seconds"],
                      "size_mb": r["quantization"]["size_mb"], "original_size_mb": r["quantization"]["original_size_mb"]}))


@pytest.mark.slow
def test_quantize_gptq_on_slurm(dcli, inputs, gptq_python):
    """The same stage as a Slurm job on the dev cluster (its profile maps method gptq to the gptq environment)."""
    model, corpus = inputs
    dcli("run", "pipeline=quantize", "cluster=dev", f"pipeline.vars.model={model}",
         f"pipeline.vars.eval_samples={SAMPLES}", *GPTQ, f"pipeline.stages.q8.quantize.calibration={corpus}")
    st = dcli.wait(timeout=1800)
    assert st["state"] == "COMPLETED" and [s["state"] for s in st["stages"]] == ["COMPLETED"], st
    check_run(dcli.run_dir(), model, corpus, gptq_python)
