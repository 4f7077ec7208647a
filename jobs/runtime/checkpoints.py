"""Trainer checkpoints that are safe to resume from and to score: `<dir>/checkpoint-N` folders (the
layout transformers' Trainer writes, for kinds pretrain/hf and align) each get `launcher-complete.json`,
written atomically and last, after the files were fsynced. The marker records every file's size, so
a checkpoint cut short while saving (no marker) or damaged later (sizes differ) is never resumed
from or evaluated; it is moved aside to `checkpoint-N.partial-<time>` for a post-mortem, never deleted.
Standard library only."""
from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from jobs import layout

MARKER = "launcher-complete.json"
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def scan(ckpt_dir: Path) -> Tuple[List[Tuple[int, Path]], List[Path]]:
    """(complete checkpoints as (step, path) by step, checkpoint-N folders that are not: no marker,
    or files that differ in size from what the marker recorded at save time, i.e. corrupted)."""
    complete, partial = [], []
    if Path(ckpt_dir).is_dir():
        for p in Path(ckpt_dir).iterdir():
            m = CHECKPOINT.match(p.name)
            if m and p.is_dir():
                (complete.append((int(m.group(1)), p)) if intact(p) else partial.append(p))
    return sorted(complete), sorted(partial)


def file_sizes(path: Path) -> Dict[str, int]:
    return {str(f.relative_to(path)): f.stat().st_size for f in sorted(path.rglob("*"))
            if f.is_file() and f.name != MARKER}


def intact(path: Path) -> bool:
    """The marker exists and every file it lists has the size it had when it was written."""
    try:
        info = layout.read_json(path / MARKER)
        if not isinstance(info, dict):
            return False
        return all((path / name).stat().st_size == size for name, size in info.get("files", {}).items())
    except (OSError, ValueError):
        return False


def set_aside(path: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target, n = path.with_name(f"{path.name}.partial-{stamp}"), 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.partial-{stamp}-{n}")
    os.replace(path, target)
    return target


def fsync_tree(path: Path) -> None:
    """Flush a checkpoint's files to storage before its marker says it is whole."""
    for p in sorted(path.rglob("*")):
        if p.is_file():
            try:
                fd = os.open(p, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError:
                pass


def mark(path: Path, info: Dict[str, Any]) -> None:
    """Declare a saved checkpoint whole: flush it, then write its marker (with the file sizes)."""
    fsync_tree(path)
    layout.atomic_write_json(path / MARKER, {**info, "time": time.time(), "files": file_sizes(path)})


def resume_point(ckpt_dir: Path, log: Callable[[str], Any]) -> Optional[Tuple[int, Path]]:
    """The newest complete checkpoint (None: start from scratch); incomplete ones are set aside."""
    complete, partial = scan(ckpt_dir)
    for p in partial:
        why = "has no " + MARKER + " (interrupted while saving)" if not (p / MARKER).is_file() else \
            "does not match the file sizes its marker recorded (corrupted)"
        log(f"{p.name} {why}: moved aside to {set_aside(p).name}, not resumed from")
    return complete[-1] if complete else None
