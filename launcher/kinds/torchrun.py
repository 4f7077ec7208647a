"""kind=torchrun: any script (`launch.script`: a .py path or `-m module`) under torchrun, one per node,
c10d rendezvous on the allocation's first node (jobs/kinds/torchrun.py)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from launcher.kinds.base import Kind, Problems


@dataclass
class Launch:
    """kind=torchrun: `script` (a .py path or `-m module`) with `args`, under torchrun on every node."""

    script: Optional[str] = None
    args: List[str] = field(default_factory=list)
    nproc_per_node: Optional[int] = None  # default: resources.gpus_per_node, or 1 without GPUs


class Torchrun(Kind):
    name = "torchrun"
    section, schema = "launch", Launch
    payload_keys = ("launch",)
    hang_watchdog = True
    health_imports = ("torch",)

    def multi_process(self, st: Dict[str, Any]) -> bool:
        return True

    def check_in_dag(self, p: Problems, st, stages, ancestors) -> None:
        if not (st["launch"]["script"] or "").strip():
            p.add("launch.script", "kind=torchrun needs launch.script (a .py path, or '-m module')")
        if st["launch"]["nproc_per_node"] is not None and st["launch"]["nproc_per_node"] < 1:
            p.add("launch.nproc_per_node", f"must be >= 1 or null, got {st['launch']['nproc_per_node']}")
        if st["resources"]["ntasks_per_node"] != 1:
            p.add("resources.ntasks_per_node",
                  "must be 1: one torchrun per node starts the processes (launch.nproc_per_node)")


KIND = Torchrun()
