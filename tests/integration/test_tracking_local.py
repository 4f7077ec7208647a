"""On cluster=local: a two-point sweep of the hf training with `tracking.backend=tensorboard` writes one
TensorBoard run per point under <run>/stages/train/tracking/<point>/, read back with TensorBoard's own
event reader (EventAccumulator, in the stage's environment: the launcher's venv has no tensorboard): a loss
curve of several steps per point, the launcher's config, the point's overrides and its swept ones as text, the latter
as hparams."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

HELPER = Path(__file__).with_name("hf_train_helper.py")

# Run in the stage's interpreter: {point folder: {"loss_steps": [...], "text": [...]}} as JSON on stdout.
READ_EVENTS = """
import json, sys
from pathlib import Path
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2
out = {}
for folder in sorted(Path(sys.argv[1]).iterdir()):
    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    loss = acc.Scalars("train/loss") if "train/loss" in tags["scalars"] else []
    texts = {t.removesuffix("/text_summary"): acc.Tensors(t)[0].tensor_proto.string_val[0].decode()
             for t in tags["tensors"] if t.startswith("launcher/")}
    start = plugin_data_pb2.HParamsPluginData.FromString(
        acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]).session_start_info
    hparams = {k: v.string_value or v.number_value for k, v in start.hparams.items()}
    out[folder.name] = {"loss_steps": [e.step for e in loss], "loss": [e.value for e in loss],
                        "scalars": tags["scalars"], "text": texts, "hparams": hparams}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def tokenized(cpu_python, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("tracking-data") / "d"
    p = subprocess.run([str(cpu_python), str(HELPER), "data", str(out)], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads((out / "data.json").read_text())


@pytest.mark.slow
def test_tensorboard_event_files_hold_a_loss_curve_per_sweep_point(cli, cpu_python, tokenized):
    steps, t = 12, "pipeline.stages.train"
    cli("run", "-m", "pipeline=train", "cluster=local", "model=tiny", "~pipeline.stages.evaluate", "seed=1,2",
        f"pipeline.vars.data={tokenized['a']}", f"pipeline.vars.tokenizer={tokenized['tokenizer']}",
        f"{t}.train.seq_len=32", f"{t}.train.micro_batch=2", f"{t}.train.log_every_steps=2",
        f"pipeline.vars.tokens={steps * 64}", f"pipeline.vars.checkpoint_every_tokens={steps * 64}",
        "cluster.tracking.backend=tensorboard", "campaign=tb-test")
    st = cli.wait(timeout=600)
    assert st["state"] == "COMPLETED", st
    folder = cli.run_dir() / "stages" / "train" / "tracking"
    p = subprocess.run([str(cpu_python), "-c", READ_EVENTS, str(folder)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    runs = json.loads(p.stdout.strip().splitlines()[-1])
    assert sorted(runs) == ["0", "1"], runs  # one tracked run per sweep point
    for point, seed in (("0", 1), ("1", 2)):
        r = runs[point]
        assert r["loss_steps"] == list(range(2, steps + 1, 2)), r  # every logged step: a curve
        assert all(v > 0 for v in r["loss"]) and "train/learning_rate" in r["scalars"], r
        assert r["text"]["launcher/sweep_point"] == f"seed={seed}", r["text"]
        assert f" seed={seed} " in r["text"]["launcher/overrides"] and "campaign=tb-test" in r["text"]["launcher/overrides"]
        assert json.loads(r["text"]["launcher/config"].strip("`\n"))["seed"] == seed
        assert r["hparams"]["seed"] == seed and r["hparams"]["launcher.point"] == int(point), r["hparams"]
        assert r["hparams"]["launcher.run_id"] == cli.run_dir().name
    assert runs["0"]["loss"] != runs["1"]["loss"]  # two seeds, two runs (not one file read twice)
