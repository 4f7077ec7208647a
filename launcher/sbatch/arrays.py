"""Slurm array arithmetic: chunks under MaxArraySize and compact --array strings."""
from __future__ import annotations

from typing import Dict, Iterable, List, Optional


def chunk_of(task: int, chunk_size: int) -> int:
    """Array indices must be < MaxArraySize, so task t runs in chunk t // size at index t % size.
    Two stages with equal task counts chunk identically, which keeps aftercorr edges chunk-to-chunk."""
    return task // chunk_size


def group_by_chunk(tasks: Iterable[int], chunk_size: int) -> Dict[int, List[int]]:
    chunks: Dict[int, List[int]] = {}
    for t in sorted(set(tasks)):
        chunks.setdefault(chunk_of(t, chunk_size), []).append(t)
    return chunks


def ranges(indices: Iterable[int]) -> str:
    """[0,1,2,5,7,8] → '0-2,5,7-8' (Slurm's --array syntax)."""
    out, run = [], []
    for i in sorted(set(indices)):
        if run and i == run[-1] + 1:
            run.append(i)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [i]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)


def expand(spec: str) -> List[int]:
    """'0-2,5,7-9:2%4' → [0,1,2,5,7,9] (inverse of ranges, also reads sacct's '123_[...]' bodies)."""
    spec = spec.split("%", 1)[0].strip("[]")
    out: List[int] = []
    for part in filter(None, spec.split(",")):
        step = 1
        if ":" in part:
            part, s = part.split(":", 1)
            step = int(s)
        if "-" in part:
            a, b = part.split("-", 1)
            out.extend(range(int(a), int(b) + 1, step))
        else:
            out.append(int(part))
    return out


def array_spec(indices: Iterable[int], throttle: Optional[int]) -> str:
    spec = ranges(indices)
    return f"{spec}%{throttle}" if throttle else spec
