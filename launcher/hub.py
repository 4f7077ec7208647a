"""Hugging Face Hub at the edges of a pipeline, login side: the hf:// references stages name, the
fetch stage the plan adds for them (and the edges to the stages that use them), and the check that
they are in the shared cache when nothing fetches them. The hub itself is never contacted here."""
from __future__ import annotations

import copy
from typing import Any, Dict, List

from omegaconf import OmegaConf

from jobs.adapters import hub_refs as hub

from launcher.errors import ConfigError
from launcher.schema import Stage

FETCH_STAGE = "hub_fetch"
PLAN_FILES_SHOWN = 1000  # `launcher plan` lists at most this many files a publish stage would upload


def stage_refs(st: Dict[str, Any]) -> List[hub.Ref]:
    """The hub repos a stage's work names (its edges and resources aside)."""
    if st.get("kind") == "fetch":
        return []
    return hub.refs_in({k: v for k, v in st.items() if k not in ("after", "resources", "requeue", "fetch")})


def add_fetch_stage(plain: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """With hub_fetch: auto, one stage `hub_fetch` downloads every repo the pipeline names (per sweep
    point) and each stage naming one waits on it (afterok). Points share the structure: a stage that
    names a repo in any point waits in all."""
    cl = plain[0]["cluster"]
    users = sorted({n for p in plain for n, st in p["pipeline"]["stages"].items() if stage_refs(st)})
    if not users or cl.get("hub_fetch", "auto") != "auto" or FETCH_STAGE in plain[0]["pipeline"]["stages"]:
        return plain
    template = OmegaConf.to_container(OmegaConf.structured(Stage(kind="fetch")), enum_to_str=True)
    out = []
    for p in plain:
        p = copy.deepcopy(p)
        stages = p["pipeline"]["stages"]
        fetch = copy.deepcopy(template)
        fetch["fetch"]["repos"] = [str(r) for r in dict.fromkeys(r for n in users for r in stage_refs(stages[n]))]
        fetch["resources"].update(partition=cl.get("hub_partition"), time="04:00:00", cpus_per_task=2)
        fetch["requeue"]["max"] = 0
        for n in users:
            stages[n]["after"] = {**stages[n]["after"], FETCH_STAGE: "afterok"}
        p["pipeline"]["stages"] = {FETCH_STAGE: fetch, **stages}
        out.append(p)
    return out


def check_cached(plan, errors: List[ConfigError]) -> None:
    """Preflight: each repo a stage names is fetched by the plan or already in the cache."""
    cl = plan.cluster
    fetched = {r for s in plan.stages.values() if s.kind == "fetch" for p in s.payloads
               for r in map(hub.parse, p["fetch"]["repos"]) if r}
    for s in plan.stages.values():
        if s.kind == "fetch" and not cl.get("hub_cache"):
            errors.append(ConfigError("a fetch stage downloads into the cluster's shared hub cache: set hub_cache in "
                                      "the cluster profile (a folder every compute node reads)", stage=s.name,
                                      key="cluster.hub_cache"))
        for point, payload in enumerate(s.payloads):
            for key, value in _strings(payload, f"pipeline.stages.{s.name}"):
                ref = hub.parse(value)
                if ref is None or ref in fetched or s.kind == "fetch":
                    continue
                if not cl.get("hub_cache"):
                    errors.append(ConfigError(f"{value} names a hub repo, but the cluster profile sets no hub_cache "
                                              f"(the shared folder compute nodes read it from)", stage=s.name, key=key))
                elif hub.snapshot(cl["hub_cache"], ref) is None:
                    errors.append(ConfigError(f"{ref.repo_id} ({ref}) is not in the hub cache {cl['hub_cache']} and no "
                                              f"fetch stage downloads it (cluster.hub_fetch is "
                                              f"{cl.get('hub_fetch')}; `auto` adds one)", stage=s.name, key=key))


def _strings(node: Any, key: str):
    if isinstance(node, str):
        yield key, node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from _strings(v, f"{key}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _strings(v, f"{key}.{i}")


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


def check_tokens(plan, errors: List[ConfigError]) -> None:
    """Preflight: each publish stage's token variable is set in this shell (tasks inherit it by name)."""
    import os

    for s in plan.stages.values():
        if s.kind == "publish":
            var = s.payloads[0]["publish"]["token_env"]
            if not os.environ.get(var):
                errors.append(ConfigError(f"publishing needs a hub token: {var} is not set in this shell (the task "
                                          f"inherits it by name; it is never written to a file)", stage=s.name,
                                          key=f"pipeline.stages.{s.name}.publish.token_env"))


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
    from launcher.render import stage_spec

    return stage_spec(plan, stage, plan_dir, plan_dir.name)
