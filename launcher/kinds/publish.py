"""kind=publish on the login side: upload a stage's output (a model, a data set, evaluation results) to
a hub repo with a generated card. The token comes from the submitting shell's variable
publish.token_env (a secret: never written to a file). The hub itself is never contacted here."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from jobs.adapters import hub_refs as hub
from jobs.layout import PLACEHOLDER

from launcher.errors import ConfigError
from launcher.kinds.base import Kind, Problems
from launcher.config.placeholders import check_placeholders

PLAN_FILES_SHOWN = 1000  # `launcher plan` lists at most this many files a publish stage would upload


@dataclass
class Publish:
    """kind=publish: a folder of the run (a model, a data set, evaluation results) to a hub repo, private
    by default, with a generated card (README.md: pipeline, configs, data recipe, scores). The token
    comes from the submitting shell's variable `token_env`, never from a file."""

    source: str = "{input}/model"  # a parent's output ({input}, {input:<stage>}) or a path
    repo_id: Optional[str] = None  # org/name
    repo_type: str = "model"  # model | dataset
    private: bool = True
    token_env: str = "HF_TOKEN"
    commit_message: Optional[str] = None  # default: "launcher: <run id> <stage>"
    allow_patterns: List[str] = field(default_factory=list)  # only these files (empty: all)
    ignore_patterns: List[str] = field(default_factory=list)
    large: bool = False  # upload_large_folder: resumable, many commits (big checkpoints, data sets)
    card: bool = True  # write README.md (replaces one in the source)


def check_publish(name: str, st: Dict[str, Any], errors: List[ConfigError]) -> None:
    p, key = st["publish"], f"pipeline.stages.{name}.publish"
    why = hub.repo_id_problem(p["repo_id"]) if p["repo_id"] else "it is not set"
    if why or "/" not in p["repo_id"]:
        errors.append(ConfigError(f"kind=publish needs repo_id as org/name, got {p['repo_id']!r}"
                                  + (f": {why}" if why else ""), stage=name, key=f"{key}.repo_id"))
    if p["repo_type"] not in ("model", "dataset"):
        errors.append(ConfigError(f"model or dataset, got {p['repo_type']!r}", stage=name, key=f"{key}.repo_type"))
    if st["tasks"] != 1:
        errors.append(ConfigError(f"must be 1 (one upload per sweep point), got {st['tasks']}", stage=name,
                                  key=f"pipeline.stages.{name}.tasks"))


def describe_publish(plan, stage, plan_dir) -> str:
    """What `launcher plan` shows of a publish stage: the repo, the exact files (when the source exists
    already) and the card as it would be rendered now (scores come from the run's evaluation stages)."""
    from jobs.adapters import hub_card
    from jobs import layout

    p = stage.payloads[0]["publish"]
    source = p["source"]
    try:
        source = layout.Folders(_spec_for(plan, stage, plan_dir), 0).fill(source)
    except (KeyError, IndexError):
        pass
    names = hub_card.files(source, p["allow_patterns"], p["ignore_patterns"], limit=PLAN_FILES_SHOWN + 1)
    files = ("\n".join(f"    {n}" for n in names[:PLAN_FILES_SHOWN]) if names else
             f"    (the files {source} holds when the stage runs; it does not exist yet)")
    if len(names) > PLAN_FILES_SHOWN:
        files += f"\n    ... (more: only the first {PLAN_FILES_SHOWN} are listed here)"
    card = hub_card.render(plan_dir, stage.name, 0, p, str(source)) if p["card"] else "(no card)"
    return (f"{stage.name}: publish {source} to {p['repo_type']} {p['repo_id']} "
            f"({'private' if p['private'] else 'public'}, token from ${p['token_env']}"
            f"{', upload_large_folder' if p['large'] else ', one commit'})\n  files:\n{files}"
            + ("\n    README.md (the card)" if p["card"] else "") + "\n  card:\n"
            + "\n".join("    " + line for line in card.splitlines()))


def _spec_for(plan, stage, plan_dir) -> Dict[str, Any]:
    from launcher.plan.render import stage_spec

    return stage_spec(plan, stage, plan_dir, plan_dir.name)


class PublishKind(Kind):
    name = "publish"
    shares_points = False  # its effect is the hub repository, not its output folder
    section, schema = "publish", Publish
    payload_keys = ("publish",)
    hub_access = "write"
    reads_stage_outputs = True

    def check_in_dag(self, p: Problems, st, stages, ancestors) -> None:
        check_publish(p.stage, st, p.errors)
        check_placeholders(p.stage, st, [(f"{p.key}.publish.source", st["publish"]["source"])], ancestors, p.errors)

    def secret_variables(self, name: str, st: Dict[str, Any]) -> Dict[str, str]:
        var = (st.get("publish") or {}).get("token_env")
        return {var: f"pipeline.stages.{name}.publish.token_env"} if var else {}

    def preflight(self, plan, stage) -> List[ConfigError]:
        errors = []
        source = stage.payloads[0]["publish"]["source"]
        if not PLACEHOLDER.search(source) and "://" not in source and not os.path.isdir(source):
            errors.append(ConfigError(f"{source} is not a folder (publish uploads a folder)", stage=stage.name,
                                      key=f"pipeline.stages.{stage.name}.publish.source"))
        # tasks inherit the token by name
        var = stage.payloads[0]["publish"]["token_env"]
        if not os.environ.get(var):
            errors.append(ConfigError(f"publishing needs a hub token: {var} is not set in this shell (the task "
                                      f"inherits it by name; it is never written to a file)", stage=stage.name,
                                      key=f"pipeline.stages.{stage.name}.publish.token_env"))
        return errors

    def targets(self, stage) -> List[Tuple[str, str]]:
        return [(f"pipeline.stages.{stage.name}.publish", "huggingface_hub:HfApi")]

    def describe(self, plan, stage, plan_dir: Path) -> List[str]:
        return [describe_publish(plan, stage, plan_dir)]


KIND = PublishKind()
