"""Compute side of kind=pretrain, backend nanotron (jobs/adapters/nanotron.py), without a GPU: which checkpoint a restart resumes
from (never a partial or corrupted one), the dataset views nanotron reads, and the files written
at submission (nanotron's YAML resuming from the checkpoints folder)."""
import json

import yaml

from jobs import layout
from jobs.adapters import nanotron as pretrain
from launcher.config.compose import compose
from launcher.plan.model import build_plan
from launcher.plan.render import build_requests, write_stage_files


def checkpoint(root, step, missing=()):
    d = root / str(step)
    for f in pretrain.NANOTRON_CHECKPOINT:
        if f in missing:
            continue
        if "." in f:
            (d / f).parent.mkdir(parents=True, exist_ok=True)
            (d / f).write_text(json.dumps({"step": step}))
        else:
            (d / f).mkdir(parents=True, exist_ok=True)
    return d


def test_restart_resumes_from_the_newest_complete_checkpoint(tmp_path):
    for step in (100, 200):
        checkpoint(tmp_path, step)
    checkpoint(tmp_path, 300, missing=("model_config.json",))  # killed while saving: nanotron writes it last
    (tmp_path / "latest.txt").write_text("300")
    logs = []
    assert pretrain.repair_latest(tmp_path, log=logs.append) == 200
    assert (tmp_path / "latest.txt").read_text() == "200"
    assert not (tmp_path / "300").exists()
    assert [p.name.split(".")[0] for p in tmp_path.glob("300.partial-*")] == ["300"]  # kept for a post-mortem
    assert any("incomplete" in m for m in logs)


def test_a_corrupted_metadata_file_is_not_resumed_from(tmp_path):
    checkpoint(tmp_path, 100)
    checkpoint(tmp_path, 200)
    (tmp_path / "200" / "checkpoint_metadata.json").write_text('{"truncat')
    (tmp_path / "latest.txt").write_text("200")
    assert pretrain.repair_latest(tmp_path, log=lambda m: None) == 100
    assert (tmp_path / "latest.txt").read_text() == "100"


def test_no_complete_checkpoint_means_from_scratch(tmp_path):
    checkpoint(tmp_path, 50, missing=("random",))
    (tmp_path / "latest.txt").write_text("50")
    assert pretrain.repair_latest(tmp_path, log=lambda m: None) is None
    assert not (tmp_path / "latest.txt").exists()
    assert pretrain.repair_latest(tmp_path / "absent", log=lambda m: None) is None


def test_dataset_views_link_the_tokens_and_name_the_tokenizer_folder(tmp_path):
    src = tmp_path / "tok"
    src.mkdir()
    for name in ("000_a.ds", "000_a.ds.index"):
        (src / name).write_bytes(b"\x01\x00\x02\x00")
    (src / "000_a.ds.metadata").write_text("/run/stages/tokenizer/out/tokenizer.json|2\n2\n2 T\n")
    work = tmp_path / "work"
    pretrain.dataset_views({str(src): 1.0}, work, work / "tokenizer")
    view = pretrain.view_folders(work, 1)[0]
    assert (view / "000_a.ds").resolve() == (src / "000_a.ds").resolve() and (view / "000_a.ds").is_symlink()
    assert (view / "000_a.ds.metadata").read_text().splitlines()[0] == f"{work / 'tokenizer'}|2"
    pretrain.dataset_views({str(src): 1.0}, work, work / "tokenizer")  # a requeue: the same views, no error


def test_submission_writes_nanotrons_yaml_resuming_from_the_checkpoints_folder(tmp_path):
    plan = build_plan([compose(["pipeline=pretrain", "cluster=local", "model=1b", "pipeline.vars.data=/shared/tok",
                                "pipeline.vars.tokenizer=/shared/tok/tokenizer.json"])], [[]])
    requests = build_requests(plan, {"train": [0]}, 1000)
    write_stage_files(plan, tmp_path, "RUN", requests, tag="s0")
    cfg = yaml.safe_load((layout.nanotron_dir(tmp_path, "train", 0) / "config.yaml").read_text())
    ckpt = str(layout.checkpoint_dir(tmp_path, "train", 0))
    assert cfg["checkpoints"]["checkpoints_path"] == cfg["checkpoints"]["resume_checkpoint_path"] == ckpt
    assert cfg["tokens"]["train_steps"] == plan.stages["train"].payloads[0]["train"]["tokens"] // (8 * 4 * 8 * 2048)
    dataset = cfg["data_stages"][0]["data"]["dataset"]
    assert dataset["dataset_folder"] == [str(layout.nanotron_dir(tmp_path, "train", 0) / "data" / "0")]
    assert cfg["tokenizer"]["tokenizer_name_or_path"] == dataset["tokenizer_name"]
    spec = json.loads((layout.stage_dir(tmp_path, "train") / "spec.json").read_text())
    assert spec["schedules"][0]["steps"] == cfg["tokens"]["train_steps"]
