"""nanotron's training YAML (launcher/plan/nanotron_config.py): golden renders of several presets and
layouts, the invariants that matter, and the goldens loaded by nanotron's OWN config loader.
Regenerate the goldens after an intended change with:
    UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/unit/test_nanotron_config.py

The loader test runs nanotron HEAD's `get_config_from_file` in a subprocess with the CPU stage
environment's python (torch, transformers, datasets, pyyaml). nanotron source: $NANOTRON_SRC (a
checkout with src/nanotron), else HEAD of the mirror /work/.mirror/huggingface+nanotron/repo.
GPU-only modules it imports are placeholders from tests/nanotron_stubs. $NANOTRON_TEST_PYTHONPATH
adds folders to that subprocess's path (e.g. one holding dacite, if the environment lacks it)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from launcher.plan import nanotron_config
from launcher.config import schema
from launcher.kinds.pretrain import Train

TESTS = Path(__file__).resolve().parent.parent
GOLDEN = TESTS / "golden" / "nanotron"
STUBS = TESTS / "nanotron_stubs"
MIRROR = Path("/work/.mirror/huggingface+nanotron/repo")

RUN = "/runs/r1/stages/pretrain"
TOKENIZER = f"{RUN}/nanotron/0/tokenizer"
CHECKPOINTS = f"{RUN}/checkpoints/0"
MERGED = "/runs/r1/stages/merge/output"

TINY = dict(name="tiny", vocab_size=4096)
LLAMA_1B = dict(name="llama-1b", hidden_size=2048, intermediate_size=8192, num_layers=16, num_heads=32,
                num_kv_heads=8, vocab_size=128256, max_position_embeddings=131072, rope_theta=500000.0)
LLAMA_7B = dict(name="llama-7b", hidden_size=4096, intermediate_size=11008, num_layers=32, num_heads=32,
                num_kv_heads=32, vocab_size=32000, max_position_embeddings=4096, tie_embeddings=False)
MOE = dict(name="qwen2-moe-small", hidden_size=1024, intermediate_size=4096, num_layers=12, num_heads=16,
           num_kv_heads=4, vocab_size=32000, num_experts=8, experts_top_k=2, moe_intermediate_size=768)


def layout(dp=1, tp=1, pp=1, cp=1, **kw):
    return dict(dp=dp, tp=tp, pp=pp, cp=cp, **kw)


# name -> (model preset, Train overrides, data folders -> weights)
CASES = {
    "tiny": (TINY, dict(tokens=2_000_000, seq_len=256, micro_batch=8, checkpoint_every_tokens=204_800,
                        optimizer=dict(warmup_steps=10)), {MERGED: 1.0}),
    "llama1b_dp2_tp2_pp2": (LLAMA_1B, dict(tokens=20_000_000_000, seq_len=4096, micro_batch=4, grad_accum=16,
                                           checkpoint_every_tokens=1_048_576_000,
                                           optimizer=dict(warmup_steps=2000, lr=3e-4, min_lr=3e-5),
                                           parallelism=layout(dp=2, tp=2, pp=2)), {MERGED: 1.0}),
    "llama1b_dp8_wsd": (LLAMA_1B, dict(tokens=20_000_000_000, seq_len=4096, micro_batch=4, grad_accum=4,
                                       checkpoint_every_tokens=1_048_576_000,
                                       optimizer=dict(schedule="wsd", warmup_steps=500, decay_fraction=0.2),
                                       parallelism=layout(dp=8, tp_mode="ALL_REDUCE", tp_async=True)),
                        {"/runs/r1/stages/merge_web/output": 0.7, "/runs/r1/stages/merge_code/output": 0.3}),
    "llama7b_tp8_pp2_dp4": (LLAMA_7B, dict(tokens=100_000_000_000, seq_len=4096, micro_batch=1, grad_accum=64,
                                           checkpoint_every_tokens=10_485_760_000,
                                           optimizer=dict(warmup_steps=2000, schedule="linear", zero_stage=1),
                                           parallelism=layout(dp=4, tp=8, pp=2, recompute_layer=True)),
                            {MERGED: 1.0}),
    "llama7b_tp8_pp2_dp2_cp2": (LLAMA_7B, dict(tokens=100_000_000_000, seq_len=4096, micro_batch=1, grad_accum=64,
                                               checkpoint_every_tokens=10_485_760_000,
                                               optimizer=dict(warmup_steps=2000),
                                               parallelism=layout(dp=2, tp=8, pp=2, cp=2)), {MERGED: 1.0}),
    "moe_qwen2_dp4": (MOE, dict(tokens=5_000_000_000, seq_len=2048, micro_batch=8, grad_accum=8,
                                checkpoint_every_tokens=524_288_000, dtype="bfloat16", seed=7,
                                optimizer=dict(warmup_steps=1000),
                                parallelism=layout(dp=4, pp_engine="afab"),
                                # the escape hatch, deep-merged last
                                nanotron={"model": {"model_config": {"_use_doc_masking": True}},
                                          "general": {"ignore_sanity_checks": False}}), {MERGED: 1.0}),
}


def case(name):
    """(train dict as the caller has it: plain strings for enums, render kwargs)."""
    model, over, data = CASES[name]
    # As compose builds it: train.model and train.seed interpolate the root `model` preset and `seed`.
    root = OmegaConf.create({"model": OmegaConf.merge(OmegaConf.structured(schema.Model), model), "seed": 1,
                             "train": OmegaConf.merge(OmegaConf.structured(Train),
                                                      {"backend": "nanotron", **over})})
    train = OmegaConf.to_container(root.train, resolve=True, enum_to_str=True)
    per_step = train["parallelism"]["dp"] * train["micro_batch"] * train["grad_accum"] * train["seq_len"]
    kwargs = dict(project="pipe", run=f"r1.pretrain.{name}", checkpoints=CHECKPOINTS, tokenizer=TOKENIZER,
                  data=data, steps=train["tokens"] // per_step,
                  checkpoint_interval=train["checkpoint_every_tokens"] // per_step)
    return train, kwargs


def rendered(name):
    train, kwargs = case(name)
    return nanotron_config.render(train, **kwargs)


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name):
    text = nanotron_config.to_yaml(rendered(name))
    golden = GOLDEN / f"{name}.yaml"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text(), f"{golden} differs; UPDATE_GOLDEN=1 after an intended change"


def test_no_stale_goldens():
    assert sorted(p.stem for p in GOLDEN.glob("*.yaml")) == sorted(CASES)


def test_invariants():
    for name in CASES:
        cfg = rendered(name)
        train, kw = case(name)
        ck = cfg["checkpoints"]
        assert ck["checkpoints_path"] == ck["resume_checkpoint_path"] == CHECKPOINTS, name
        assert ck["checkpoint_interval"] == kw["checkpoint_interval"] and ck["save_initial_state"] is False
        assert cfg["tokens"]["train_steps"] == kw["steps"] > 0
        ds = cfg["data_stages"][0]["data"]["dataset"]
        assert sum(ds["dataset_weights"]) == pytest.approx(1.0)
        assert ds["dataset_folder"] == list(kw["data"])
        assert ds["tokenizer_name"] == cfg["tokenizer"]["tokenizer_name_or_path"] == TOKENIZER
        assert ds["vocab_size"] == cfg["model"]["model_config"]["vocab_size"] == train["model"]["vocab_size"]
        assert cfg["general"]["seed"] == cfg["data_stages"][0]["data"]["seed"] == train["seed"]
        lr = cfg["optimizer"]["learning_rate_scheduler"]
        assert lr["lr_decay_starting_step"] + lr["lr_decay_steps"] == kw["steps"], name
    assert rendered("llama1b_dp8_wsd")["data_stages"][0]["data"]["dataset"]["dataset_weights"] == [0.7, 0.3]


def test_model_classes_and_token_size():
    assert rendered("tiny")["model"]["model_config"]["is_llama_config"] is True
    assert rendered("tiny")["data_stages"][0]["data"]["dataset"]["token_size_in_bytes"] == 2
    assert rendered("llama1b_dp2_tp2_pp2")["data_stages"][0]["data"]["dataset"]["token_size_in_bytes"] == 4
    moe = rendered("moe_qwen2_dp4")["model"]["model_config"]
    assert moe["is_qwen2_config"] and "is_llama_config" not in moe
    assert moe["moe_config"]["num_experts"] == 8 and moe["moe_config"]["moe_intermediate_size"] == 768
    assert moe["_use_doc_masking"] is True  # from train.nanotron
    cp = rendered("llama7b_tp8_pp2_dp2_cp2")
    assert cp["parallelism"]["context_parallel_size"] == 2
    assert cp["model"]["model_config"]["_attn_implementation"] == "llama3_ring_attention"


def test_wsd_schedule():
    train, kw = case("llama1b_dp8_wsd")
    lr = rendered("llama1b_dp8_wsd")["optimizer"]["learning_rate_scheduler"]
    assert lr["lr_decay_style"] == "1-sqrt"
    assert lr["lr_decay_starting_step"] == round(kw["steps"] * 0.8)
    assert lr["lr_decay_steps"] == kw["steps"] - round(kw["steps"] * 0.8)
    cos = rendered("tiny")["optimizer"]["learning_rate_scheduler"]
    assert cos["lr_decay_style"] == "cosine" and cos["lr_decay_starting_step"] == 10


def test_tp_async_only_with_reduce_scatter():
    assert rendered("llama1b_dp8_wsd")["parallelism"]["tp_linear_async_communication"] is False
    assert rendered("llama1b_dp2_tp2_pp2")["parallelism"]["tp_linear_async_communication"] is True


def test_a_folder_of_weight_zero_is_left_out():
    """train.data weight 0 (listed, not drawn: a sweep's "without" point, docs/synthetic.md)."""
    train, kwargs = case("tiny")
    cfg = nanotron_config.render(train, **{**kwargs, "data": {"/web": 1.0, "/synthetic": 0.0}})
    ds = cfg["data_stages"][0]["data"]["dataset"]
    assert ds["dataset_folder"] == ["/web"] and ds["dataset_weights"] == [1.0]


def test_escape_hatch_replaces_lists_and_keeps_the_rest():
    train, kw = case("tiny")
    train["nanotron"] = {"tokens": {"train_steps": 5}, "data_stages": [{"name": "x"}]}
    cfg = nanotron_config.render(train, **kw)
    assert cfg["tokens"]["train_steps"] == 5 and cfg["tokens"]["sequence_length"] == 256
    assert cfg["data_stages"] == [{"name": "x"}]
    assert rendered("tiny")["tokens"]["train_steps"] == kw["steps"]  # the input was not mutated


# --- nanotron's own loader -------------------------------------------------------------------------

LOADER = textwrap.dedent("""
    import json, sys
    import yaml
    from nanotron.config import Config, NanosetDatasetsArgs, get_config_from_file

    for job in json.loads(sys.argv[1]):
        try:
            c = get_config_from_file(job["path"], config_class=Config)
        except Exception as e:  # reported to the test, which decides
            error = f"{type(e).__name__}: {e}"
            try:  # dacite's union matching hides why the dataset section failed: ask it directly
                NanosetDatasetsArgs(**yaml.safe_load(open(job["path"]))["data_stages"][0]["data"]["dataset"])
            except Exception as cause:
                error += f" | NanosetDatasetsArgs: {type(cause).__name__}: {cause}"
            print(json.dumps({"path": job["path"], "error": error}))
            continue
        m, p, lr = c.model.model_config, c.parallelism, c.optimizer.learning_rate_scheduler
        ds = c.data_stages[0].data.dataset
        assert isinstance(ds, NanosetDatasetsArgs), type(ds)
        print(json.dumps({
            "path": job["path"], "model_class": type(m).__name__, "hidden_size": m.hidden_size,
            "num_layers": m.num_hidden_layers, "vocab_size": m.vocab_size,
            "experts": m.moe_config.num_experts if getattr(m, "moe_config", None) else 0,
            "dp": p.dp, "tp": p.tp, "pp": p.pp, "cp": p.context_parallel_size, "ep": p.expert_parallel_size,
            "tp_mode": p.tp_mode.name, "pp_engine": type(p.pp_engine).__name__,
            "train_steps": c.tokens.train_steps, "seq_len": c.tokens.sequence_length,
            "checkpoints_path": str(c.checkpoints.checkpoints_path),
            "resume_checkpoint_path": str(c.checkpoints.resume_checkpoint_path),
            "checkpoint_interval": c.checkpoints.checkpoint_interval,
            "lr_decay_style": lr.lr_decay_style, "lr_decay_starting_step": lr.lr_decay_starting_step,
            "lr_decay_steps": lr.lr_decay_steps, "dtype": str(c.model.dtype),
            "dataset_folder": ds.dataset_folder, "dataset_weights": ds.dataset_weights,
            "tokenizer": c.tokenizer.tokenizer_name_or_path, "seed": c.general.seed,
            "data_seed": c.data_stages[0].data.seed,
        }))
""")


@pytest.fixture(scope="module")
def nanotron_src(tmp_path_factory) -> Path:
    if os.environ.get("NANOTRON_SRC"):
        src = Path(os.environ["NANOTRON_SRC"]) / "src"
        if not (src / "nanotron" / "config" / "config.py").is_file():
            pytest.fail(f"NANOTRON_SRC={os.environ['NANOTRON_SRC']} has no src/nanotron/config/config.py")
        return src
    if not (MIRROR / "HEAD").exists() or not shutil.which("git"):
        pytest.skip("nanotron source not available: set NANOTRON_SRC (a nanotron checkout)")
    out = tmp_path_factory.mktemp("nanotron")
    archive = subprocess.run(["git", f"--git-dir={MIRROR}", "archive", "HEAD", "src"], capture_output=True,
                             check=True, timeout=120).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True, timeout=120)
    return out / "src"


@pytest.fixture(scope="module")
def load(cpu_python, nanotron_src):
    """jobs [{path}] -> nanotron's view of each file (or its error), from one subprocess."""
    extra = [p for p in os.environ.get("NANOTRON_TEST_PYTHONPATH", "").split(os.pathsep) if p]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"),
           "PYTHONPATH": os.pathsep.join([str(STUBS), *extra, str(nanotron_src)]),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONNOUSERSITE": "1"}
    probe = subprocess.run([str(cpu_python), "-c", "import dacite"], env=env, capture_output=True, text=True)
    if probe.returncode:
        pytest.skip(f"{cpu_python} cannot import dacite (nanotron's config loader needs it): add dacite to "
                    "conf/envs/cpu.txt, or point NANOTRON_TEST_PYTHONPATH at a folder holding it")

    def run(jobs):
        p = subprocess.run([str(cpu_python), "-c", LOADER, json.dumps(jobs)], env=env, cwd="/",
                           capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
        return {r["path"]: r for r in map(json.loads, p.stdout.splitlines())}
    return run


def test_nanotron_loads_every_golden(load):
    out = load([{"path": str(GOLDEN / f"{name}.yaml")} for name in sorted(CASES)])
    for name in sorted(CASES):
        got, cfg = out[str(GOLDEN / f"{name}.yaml")], yaml.safe_load((GOLDEN / f"{name}.yaml").read_text())
        assert "error" not in got, f"{name}: nanotron refused it: {got.get('error')}"
        mc, par, ds = cfg["model"]["model_config"], cfg["parallelism"], cfg["data_stages"][0]["data"]["dataset"]
        lr = cfg["optimizer"]["learning_rate_scheduler"]
        assert got["model_class"] == ("LlamaConfig" if "is_llama_config" in mc else "Qwen2Config"), name
        assert (got["dp"], got["tp"], got["pp"], got["cp"], got["ep"]) == (
            par["dp"], par["tp"], par["pp"], par["context_parallel_size"], par["expert_parallel_size"]), name
        assert (got["hidden_size"], got["num_layers"], got["vocab_size"]) == (
            mc["hidden_size"], mc["num_hidden_layers"], mc["vocab_size"]), name
        assert got["experts"] == mc.get("moe_config", {}).get("num_experts", 0)
        assert got["train_steps"] == cfg["tokens"]["train_steps"] and got["seq_len"] == cfg["tokens"]["sequence_length"]
        assert got["checkpoints_path"] == got["resume_checkpoint_path"] == CHECKPOINTS
        assert got["checkpoint_interval"] == cfg["checkpoints"]["checkpoint_interval"]
        assert (got["lr_decay_style"], got["lr_decay_starting_step"], got["lr_decay_steps"]) == (
            lr["lr_decay_style"], lr["lr_decay_starting_step"], lr["lr_decay_steps"]), name
        assert got["dataset_folder"] == ds["dataset_folder"] and got["dataset_weights"] == ds["dataset_weights"]
        assert got["tokenizer"] == TOKENIZER and got["seed"] == got["data_seed"] == cfg["general"]["seed"]
        assert got["dtype"] == f"torch.{cfg['model']['dtype']}"
    assert out[str(GOLDEN / "moe_qwen2_dp4.yaml")]["pp_engine"] == "AllForwardAllBackwardPipelineEngine"
    assert out[str(GOLDEN / "llama1b_dp8_wsd.yaml")]["tp_mode"] == "ALL_REDUCE"


def test_nanotron_checks_the_tokenized_folders_metadata(load, tmp_path):
    """With real folders, nanotron compares tokenizer_name and token size with the first line of
    each folder's *.metadata ("<tokenizer>|<bytes>", written by datatrove's DocumentTokenizer): that
    line must name the same tokenizer folder the YAML does."""
    jobs = []
    for label, line in [("same", f"{tmp_path}/tok|2"), ("file", f"{tmp_path}/tok/tokenizer.json|2"),
                        ("size", f"{tmp_path}/tok|4")]:
        folder = tmp_path / label
        folder.mkdir()
        (folder / "00000_tokens.ds.metadata").write_text(f"{line}\n1000\n1K")
        train, kw = case("tiny")
        cfg = nanotron_config.render(train, **{**kw, "tokenizer": f"{tmp_path}/tok", "data": {str(folder): 1.0}})
        (tmp_path / f"{label}.yaml").write_text(nanotron_config.to_yaml(cfg))
        jobs.append({"path": str(tmp_path / f"{label}.yaml")})
    out = load(jobs)
    assert "error" not in out[str(tmp_path / "same.yaml")], out[str(tmp_path / "same.yaml")]
    assert "Tokenizer name mismatch" in out[str(tmp_path / "file.yaml")]["error"]
    assert "Token size mismatch" in out[str(tmp_path / "size.yaml")]["error"]
