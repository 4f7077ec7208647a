"""The log naming of the batch scripts, in one place: where a task's logs are (submitit's
`<array job>_<index>_<rank>_log.out|.err`, in the stage's logs/ folder), how a literal folder goes
into a Slurm filename pattern, and how a pattern expands (the local driver does what Slurm does).
Pure: no client is called here."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, Optional


def log_stem(job: object = "%A", index: object = "%a", rank: object = "%t") -> str:
    """A task's log file name without its suffix (.out, .err): submitit's `%A_%a_%t_log` naming.
    With the defaults, the Slurm filename pattern (array job id, array index, rank of the step); with
    values, the file one task wrote: log_stem(12, 3, 0) -> '12_3_0_log'. The batch script's own
    --output/--error are rank 0 (`%A_%a_0_log`); srun's are per rank."""
    return f"{job}_{index}_{rank}_log"


def filename_pattern(path: Path) -> str:
    """A literal path as a Slurm filename pattern (sbatch and srun --output/--error/--input): every `%`
    doubled, since Slurm expands %x, %j, %A... and reads %% as one % (sbatch(1), filename pattern).
    A backslash cannot be escaped (Slurm then expands nothing and drops it): unsafe_path_reason
    refuses such paths before anything is written."""
    return str(path).replace("%", "%%")


def unsafe_path_reason(path: str) -> Optional[str]:
    """Why Slurm could not be given this path in a filename pattern or an #SBATCH line; None if it can."""
    if "\\" in path:
        return ("contains a backslash: Slurm then expands no filename pattern in the log paths (and drops "
                "the backslash), so no task log would be where the launcher looks")
    if any(ord(c) < 32 for c in path):
        return "contains a control character (a newline ends an #SBATCH line)"
    return None


def expand_pattern(pattern: str, fields: Dict[str, str]) -> str:
    """A Slurm filename pattern (sbatch(1), "filename pattern") with the given fields filled in:
    %% is one %, %<c> is fields[c] (an optional zero-padding width before c applies to numbers),
    an unknown %<c> stays as it is, and a pattern with a backslash expands nothing (backslashes dropped)."""
    if "\\" in pattern:
        return pattern.replace("\\", "")
    return re.sub(r"%(\d*)([%A-Za-z])", lambda m: _field(m.group(1), m.group(2), fields, m.group(0)), pattern)


def _field(width: str, c: str, fields: Dict[str, str], raw: str) -> str:
    if c == "%":
        return "%" + width if width else "%"
    value = fields.get(c)
    if value is None:
        return raw
    return value.zfill(min(int(width), 10)) if width and value.isdigit() else value
