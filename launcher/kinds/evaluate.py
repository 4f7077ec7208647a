"""kind=evaluate: lighteval on every checkpoint of the parent training (or convert) stage, each once;
with `after` it follows training as checkpoints appear (jobs/kinds/evaluate.py)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from jobs.adapters import eval_tasks
from jobs.layout import PLACEHOLDER

from launcher.errors import ConfigError
from launcher.kinds.base import DATA_CHECK_MAX_BYTES, Kind, Problems


@dataclass
class Evaluate:
    """kind=evaluate: one array task per sweep point scores every complete checkpoint of the parent
    stage (pretrain with backend hf, or convert) exactly once. With `after: {train: after}` it
    follows training as checkpoints appear and ends when training has ended (whatever its state)."""

    suite: Optional[str] = "demo"  # built-in held-out tasks (jobs/adapters/eval_tasks.py); null: only `tasks`
    # More tasks: {name, kind: multiple_choice | perplexity, path: <jsonl>, metric, random_baseline,
    # higher_is_better} (formats in jobs/adapters/eval_tasks.py).
    tasks: List[Dict[str, Any]] = field(default_factory=list)
    poll_s: float = 20.0  # how often a following evaluation looks for new checkpoints
    batch_size: int = 8
    max_samples: Optional[int] = None  # per task; null: all


class EvaluateKind(Kind):
    name = "evaluate"
    section, schema = "evaluate", Evaluate
    payload_keys = ("evaluate",)
    reads_stage_outputs = True
    scores_checkpoints = True

    def check_in_dag(self, p: Problems, st, stages, ancestors) -> None:
        from launcher import kinds

        parents = [n for n in st["after"] if n in stages]
        parent = stages[parents[0]] if len(parents) == 1 else {}
        if not (parent and kinds.get(parent["kind"]).whole_model_checkpoints(parent)):
            p.add("after", "kind=evaluate needs exactly one stage in `after` whose checkpoints are whole "
                           "models: a pretrain stage with backend=hf, a convert stage, or an align stage "
                           "without LoRA (adapter checkpoints are not models) and not trainer: reward (its "
                           "checkpoints are classifiers, not language models)")
        elif st["tasks"] != 1:
            p.add("tasks", f"must be 1 (one evaluation task per training run), got {st['tasks']}")
        self._check_tasks(p, st["evaluate"])

    @staticmethod
    def _check_tasks(p: Problems, ev: Dict[str, Any]) -> None:
        if not ev["suite"] and not ev["tasks"]:
            p.add("evaluate", "nothing to evaluate: set evaluate.suite (demo) or evaluate.tasks")
        for k, v, ok in (("batch_size", ev["batch_size"], ev["batch_size"] >= 1),
                         ("max_samples", ev["max_samples"], ev["max_samples"] is None or ev["max_samples"] >= 1),
                         ("poll_s", ev["poll_s"], ev["poll_s"] > 0)):
            if not ok:
                p.add(f"evaluate.{k}", f"must be {'> 0' if k == 'poll_s' else '>= 1'}"
                                       f"{' or null' if k == 'max_samples' else ''}, got {v}")
        if ev["suite"] not in (None, "demo"):
            p.add("evaluate.suite", f"unknown suite {ev['suite']!r} (demo, or null)")
        for i, t in enumerate(ev["tasks"]):
            missing = [k for k in ("name", "kind", "path") if not t.get(k)]
            if missing:
                p.add(f"evaluate.tasks.{i}", f"a task needs {', '.join(missing)}")
            else:  # what jobs/adapters/lighteval.py evaluate checks on the node (the rows: preflight)
                for problem in eval_tasks.check_spec(t, read=False):
                    p.add(f"evaluate.tasks.{i}", problem)
        names = (list(eval_tasks.SUITE_TASKS) if ev["suite"] == "demo" else []) + [t.get("name") for t in ev["tasks"]]
        for i, t in enumerate(ev["tasks"]):
            if names.count(t.get("name")) > 1:
                p.add(f"evaluate.tasks.{i}.name", f"task name {t.get('name')!r} is used twice in this stage "
                                                  f"({names}); each task needs its own")
                break

    def tracks(self, st: Dict[str, Any]) -> Tuple[str, ...]:
        # each checkpoint's scores as scalars / metrics at its step (jobs/adapters/tracking.py write_eval_scalars)
        return ("tensorboard", "wandb", "mlflow")

    def spec_extra(self, plan, stage) -> Dict[str, Any]:
        """What it scores: the parent's checkpoints, and which variant (seed, schedule) each run is."""
        from launcher import kinds

        parent = plan.stages[stage.deps[0].parent]
        return dict(parent_kind=parent.kind, parent_hash=parent.hash, overrides=plan.points,
                    **kinds.get(parent.kind).checkpoint_runs(plan, parent))

    def preflight(self, plan, stage) -> List[ConfigError]:
        errors = []
        for payload in stage.payloads:
            for i, t in enumerate(payload["evaluate"]["tasks"]):
                path = t.get("path")
                if not isinstance(path, str) or not path or PLACEHOLDER.search(path):
                    continue
                if not os.path.isfile(path):
                    problems = [f"task {t.get('name')!r}: {path} is not a file"]
                elif os.path.getsize(path) <= DATA_CHECK_MAX_BYTES:  # larger: the node reads the rows
                    problems = eval_tasks.check_spec(t, read=True)  # every row, as lighteval's run will
                else:
                    problems = []
                errors += [ConfigError(p, stage=stage.name, key=f"pipeline.stages.{stage.name}.evaluate.tasks.{i}.path")
                           for p in problems]
        return errors


KIND = EvaluateKind()
