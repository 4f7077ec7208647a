"""kind=fetch on the login side: download hub repos (hf://org/name[@rev]) into the cluster's shared
cache. With cluster.hub_fetch=auto the plan adds one such stage (`hub_fetch`) for every hf://
reference the pipeline names, and each stage naming one waits on it. The hub itself is never
contacted here."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from jobs.adapters import hub_refs as hub

from launcher.errors import ConfigError
from launcher.kinds.base import Kind, Problems

FETCH_STAGE = "hub_fetch"


@dataclass
class Fetch:
    """kind=fetch: snapshot_download of each repo into the cluster's hub_cache. The plan adds one
    (stage `hub_fetch`) for every hf:// reference of the pipeline; the stages naming them wait on it."""

    repos: List[str] = field(default_factory=list)  # hf://org/name[@revision], hf://datasets/org/name[@revision]
    allow_patterns: List[str] = field(default_factory=list)  # only these files (empty: all)
    ignore_patterns: List[str] = field(default_factory=list)


def stage_refs(st: Dict[str, Any], memo: Optional[Dict[int, list]] = None) -> List[hub.Ref]:
    """The hub repos a stage's work names (its edges and resources aside); a fetch stage's own repos are
    what it downloads, not what it needs. `memo` (id of a section -> its refs) reads a section that
    several sweep points share once (the same object: launcher/config/incremental.py)."""
    if st.get("kind") == "fetch":
        return []
    if memo is None:
        return hub.refs_in({k: v for k, v in st.items() if k not in ("after", "resources", "requeue", "fetch")})
    if id(st) in memo:  # a stage mapping several points share
        return memo[id(st)]
    found: list = []
    for k, v in st.items():
        if k not in ("after", "resources", "requeue", "fetch"):
            if id(v) not in memo:
                memo[id(v)] = hub.refs_in(v)
            found += memo[id(v)]
    memo[id(st)] = list(dict.fromkeys(found))
    return memo[id(st)]


def add_fetch_stage(plain: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """With hub_fetch: auto, one stage `hub_fetch` downloads every repo the pipeline names (per sweep
    point) and each stage naming one waits on it (afterok). Points share the structure: a stage that
    names a repo in any point waits in all."""
    from omegaconf import OmegaConf

    from launcher.config.schema import Stage

    cl = plain[0]["cluster"]
    memo: Dict[int, list] = {}  # sweep points share sections: each read once (the configs live meanwhile)
    users = sorted({n for p in plain for n, st in p["pipeline"]["stages"].items() if stage_refs(st, memo)})
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


class FetchKind(Kind):
    name = "fetch"
    section, schema = "fetch", Fetch
    payload_keys = ("fetch",)
    hub_access = "inherit"  # offline (the tests), it serves what the cache holds
    downloads_hub_refs = True

    def expand_pipeline(self, plain):
        return add_fetch_stage(plain), {}

    def check_pipeline(self, cfg: Dict[str, Any], errors: List[ConfigError]) -> None:
        """The stage the plan would add must not overwrite one of the config's."""
        stages = cfg["pipeline"]["stages"]
        if (cfg["cluster"].get("hub_fetch", "auto") == "auto" and FETCH_STAGE in stages
                and stages[FETCH_STAGE].get("kind") != "fetch"
                and any(stage_refs(st) for n, st in stages.items() if n != FETCH_STAGE)):
            errors.append(ConfigError(
                f"the plan adds a stage named '{FETCH_STAGE}' to download the pipeline's hf:// references "
                f"(cluster.hub_fetch=auto); this kind={stages[FETCH_STAGE].get('kind')} stage has its name",
                stage=FETCH_STAGE, key=f"pipeline.stages.{FETCH_STAGE}"))

    def check_in_dag(self, p: Problems, st, stages, ancestors) -> None:
        for i, r in enumerate(st["fetch"]["repos"]):
            if not hub.parse(r) and not hub.problem(r):  # (a malformed hf:// string is reported above)
                p.add(f"fetch.repos.{i}", f"{r!r} is not a hub reference (hf://org/name[@revision] or "
                                          f"hf://datasets/org/name[@revision])")

    def fetched_refs(self, stage) -> List[hub.Ref]:
        return [r for p in stage.payloads for r in map(hub.parse, p["fetch"]["repos"]) if r]

    def preflight(self, plan, stage) -> List[ConfigError]:
        if plan.cluster.get("hub_cache"):
            return []
        return [ConfigError("a fetch stage downloads into the cluster's shared hub cache: set hub_cache in the "
                            "cluster profile (a folder every compute node reads)", stage=stage.name,
                            key="cluster.hub_cache")]

    def targets(self, stage) -> List[Tuple[str, str]]:
        return [(f"pipeline.stages.{stage.name}.fetch", "huggingface_hub:HfApi")]


KIND = FetchKind()
