"""kind=convert: the nanotron checkpoints of the parent pretrain stage → Hugging Face format, one task
per training run, under torchrun (jobs/kinds/convert.py)."""
from __future__ import annotations

from typing import Any, Dict, List

from launcher.kinds.base import Kind, Problems


class Convert(Kind):
    name = "convert"

    def multi_process(self, st: Dict[str, Any]) -> bool:
        return True

    def whole_model_checkpoints(self, st: Dict[str, Any]) -> bool:
        return True

    def checkpoint_runs(self, plan, stage) -> Dict[str, List[Any]]:
        """Its checkpoints are its parent's, converted: the parent's runs."""
        from launcher import kinds

        parent = plan.stages[stage.deps[0].parent]
        return kinds.get(parent.kind).checkpoint_runs(plan, parent)

    def check_in_dag(self, p: Problems, st, stages, ancestors) -> None:
        parents = [n for n in st["after"] if n in stages]
        if len(parents) != 1 or stages[parents[0]]["kind"] != "pretrain" \
                or stages[parents[0]]["train"]["backend"] != "nanotron":
            p.add("after", "kind=convert needs exactly one stage in `after`: a pretrain stage with "
                           "backend=nanotron (hf checkpoints are Hugging Face models already)")
        elif st["tasks"] != 1:
            p.add("tasks", f"must be 1 (one conversion task per training run), got {st['tasks']}")

    def spec_extra(self, plan, stage) -> Dict[str, Any]:
        return {"parent_train": plan.stages[stage.deps[0].parent].payloads[0]["train"]}


KIND = Convert()
