"""How kind=pretrain (backend nanotron) and kind=convert drive nanotron: one torchrun per node
(jobs/adapters/torchrun.py) running nanotron's run_train.py on the YAML the launcher rendered at
submission, whose resume_checkpoint_path is the checkpoints folder: every requeue resumes from
latest.txt. Before each start, latest.txt is made to point at a complete checkpoint: a partial one
(killed mid-save) is moved aside, never resumed from, never deleted.

Standard library only (the launcher imports inputs/view_folders to render nanotron's YAML); nanotron
itself runs in the torchrun workers."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from jobs import layout
from jobs.adapters import tokenizer_files, tracking
from jobs.adapters.nanotron_progress import NanotronProgress
from jobs.runtime.log import log as task_log

# What nanotron writes into <checkpoints>/<step>/, model_config.json last (trainer.save_checkpoint):
# a step folder with all of them is whole.
NANOTRON_CHECKPOINT = ("checkpoint_metadata.json", "model_config.json", "model", "optimizer", "lr_scheduler", "random")


def inputs(spec: Dict[str, Any], point: int, train: Dict[str, Any]) -> tuple[Dict[str, float], str]:
    """(tokenized folder -> weight, tokenizer path) with placeholders filled in."""
    folders = layout.Folders(spec, point)
    data: Dict[str, float] = {}
    for d in train["data"]:  # the same folder twice: weights add up
        folder = str(folders.fill(d["folder"]))
        data[folder] = data.get(folder, 0.0) + float(d["weight"])
    return data, folders.fill(train["tokenizer"])


def complete_steps(checkpoints: Path) -> List[int]:
    """Steps whose folder holds everything nanotron writes for a checkpoint, oldest first."""
    steps = []
    for d in checkpoints.iterdir() if checkpoints.is_dir() else ():
        if d.name.isdigit() and all((d / f).exists() for f in NANOTRON_CHECKPOINT):
            try:
                json.loads((d / "checkpoint_metadata.json").read_text())
            except ValueError:
                continue  # truncated: not a checkpoint to resume from
            steps.append(int(d.name))
    return sorted(steps)


def repair_latest(checkpoints: Path, log: Callable[[str], Any] = task_log) -> Optional[int]:
    """Make latest.txt name the newest complete checkpoint (None: start from scratch). Step folders
    newer than it are partial: moved aside as <step>.partial-<time> for a post-mortem."""
    latest_file = checkpoints / "latest.txt"
    try:
        latest = int(latest_file.read_text().strip())
    except (OSError, ValueError):
        latest = None
    good = complete_steps(checkpoints)
    resume = good[-1] if good else None
    for d in checkpoints.iterdir() if checkpoints.is_dir() else ():
        if d.name.isdigit() and int(d.name) not in good and (resume is None or int(d.name) > resume):
            aside = d.with_name(f"{d.name}.partial-{int(time.time())}")
            os.replace(d, aside)
            log(f"checkpoint step {d.name} is incomplete: moved aside to {aside.name}, not resumed from")
    if resume is None:
        latest_file.unlink(missing_ok=True)
    elif latest != resume:
        layout.atomic_write_text(latest_file, f"{resume}")
        log(f"latest.txt said {latest}; the newest complete checkpoint is step {resume}")
    return resume


def view_folders(work: Path, n: int) -> List[Path]:
    """The dataset views nanotron reads (dataset_views), data/<i>/ under the stage's nanotron folder."""
    return [Path(work) / "data" / str(i) for i in range(n)]


def dataset_views(data: Dict[str, float], work: Path, tokenizer: Path) -> None:
    """nanotron asserts that each tokenized file's .metadata names the tokenizer its config names,
    and it loads that tokenizer with AutoTokenizer (a folder), while datatrove tokenized with the
    tokenizer.json file and wrote that path. So nanotron reads views: data/<i>/ with links to the
    token files and metadata naming the tokenizer folder. The token files are never copied."""
    for folder, view in zip(data, view_folders(work, len(data))):
        view.mkdir(parents=True, exist_ok=True)
        for ds in sorted(Path(folder).glob("*.ds")):
            for f in (ds, ds.with_name(ds.name + ".index")):
                link = view / f.name
                if not link.exists():
                    os.symlink(f, link)
            lines = ds.with_name(ds.name + ".metadata").read_text().splitlines()
            lines[0] = f"{tokenizer}|{lines[0].rsplit('|', 1)[1]}"  # <tokenizer>|<bytes per token>
            layout.atomic_write_text(view / (ds.name + ".metadata"), "\n".join(lines) + "\n")


def _check(train: Dict[str, Any], tokenizer: str) -> str:
    """nanotron's run_train.py (train.run_train, or NANOTRON_HOME's), checked with the tokenizer's size."""
    entry = train.get("run_train") or os.path.join(os.environ.get("NANOTRON_HOME", ""), "run_train.py")
    if not Path(entry).is_file():
        raise FileNotFoundError(f"train.run_train: nanotron's run_train.py not found at {entry!r} (set train.run_train "
                                f"or NANOTRON_HOME in the nanotron environment)")
    have = tokenizer_files.size(tokenizer)
    if have != train["model"]["vocab_size"]:
        raise ValueError(f"train.model.vocab_size is {train['model']['vocab_size']} but the tokenizer {tokenizer} has "
                         f"{have} tokens (nanotron asserts they are equal)")
    return entry


def run_nanotron(task, train: Dict[str, Any], tokenizer: str) -> Dict[str, Any]:
    """kind=pretrain, backend nanotron, for one task (a jobs.kinds.base.TaskHandle)."""
    from jobs.adapters.torchrun import launch  # standard library only

    work = layout.nanotron_dir(task.run_dir, task.stage, task.point)
    config = work / "config.yaml"
    checkpoints = task.ctx.checkpoint_dir
    entry = _check(train, tokenizer)
    steps = task.spec["schedules"][task.point]["steps"]
    resume = None
    if task.rank == 0:  # one node prepares the folders; the others meet it at the rendezvous
        tokenizer_files.hf_folder(tokenizer, work / "tokenizer")
        dataset_views(inputs(task.spec, task.point, train)[0], work, work / "tokenizer")
        resume = repair_latest(checkpoints)
    if resume is not None and resume >= steps:  # nanotron refuses to resume a finished run
        task_log(f"nanotron: the checkpoint of the last step ({resume}) is complete; nothing left to train")
        return {"backend": "nanotron", "final_step": resume, "resumed_from": resume, "steps": steps,
                "checkpoints": complete_steps(checkpoints), "checkpoints_path": str(checkpoints), "config": str(config)}
    limit = task.spec["requeue"]["max"]
    task_log(f"nanotron: {'resuming from step ' + str(resume) if resume is not None else 'starting from scratch'} "
             f"(requeue {task.restarts}/{limit}), config {config}")
    gpus = task.spec["resources"]["gpus_per_node"]
    progress = NanotronProgress(layout.progress_path(task.run_dir, task.stage, task.task),
                                task.spec["schedules"][task.point]["tokens_per_step"], checkpoints, complete_steps,
                                total_steps=steps,
                                first_step=resume or 0, rank=task.rank)
    launch(task, [entry, "--config-file", str(config)], nproc_per_node=gpus, port_base=task.spec["rdzv_port_base"],
           extra_env=tracking.nanotron_environment(task.spec, task.point), on_line=progress.feed)
    saved = complete_steps(checkpoints)
    return {"backend": "nanotron", "final_step": saved[-1] if saved else None, "resumed_from": resume, "steps": steps,
            "checkpoints": saved, "checkpoints_path": str(checkpoints), "config": str(config)}
