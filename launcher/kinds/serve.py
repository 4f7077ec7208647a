"""kind=serve (vLLM's OpenAI-compatible server) on the login side: its config section and checks, what
its clients' specs say of it, what preflight reads (the model folder, its length) and resolves in the
stage's environment. A server provides an endpoint: stages that wait on it with `after` get it
(LAUNCHER_ENDPOINT_<STAGE>), and a resumed client brings it back; its task reruns when complete."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from jobs.layout import PLACEHOLDER

from launcher.errors import ConfigError
from launcher.kinds.base import Kind, Problems
from launcher.placeholders import check_placeholders


@dataclass
class Serve:
    """kind=serve: vLLM's OpenAI-compatible server on the model. The endpoint (host, port, model) is
    published to stages/<stage>/endpoints/<point>.json once /health answers and a test completion
    succeeds; stages that wait on this one with `after` get it as LAUNCHER_ENDPOINT_<STAGE>."""

    model: str = "{input}/model"  # HF folder: a parent's output or a path
    served_model_name: Optional[str] = None  # default: the stage name
    tensor_parallel: int = 1  # GPUs per server (<= resources.gpus_per_node)
    max_model_len: Optional[int] = None
    dtype: str = "auto"
    ready_timeout_s: float = 600.0  # fail (with the server's log) if not ready by then
    serve_s: Optional[float] = None  # stop after this long; null: when the stages that wait on it have ended
    port_base: int = 30000  # port = first free from base + job id % 10000
    args: List[str] = field(default_factory=list)  # more `vllm serve` arguments


def check_serve(name: str, st: Dict[str, Any], errors: List[ConfigError]) -> None:
    key, s, r = f"pipeline.stages.{name}", st["serve"], st["resources"]

    def bad(sub: str, msg: str) -> None:
        errors.append(ConfigError(msg, stage=name, key=f"{key}.{sub}"))

    tp, gpus = s["tensor_parallel"], r["gpus_per_node"]
    if tp < 1:
        bad("serve.tensor_parallel", f"must be >= 1, got {tp}")
    elif gpus and tp > gpus:
        bad("serve.tensor_parallel", f"{tp} GPUs per server but resources.gpus_per_node is {gpus}: use "
                                     f"tensor_parallel <= {gpus}")
    elif not gpus and tp != 1:
        bad("serve.tensor_parallel", f"{tp} without GPUs: CPU serving runs one process (tensor_parallel=1)")
    if r["nodes"] != 1:
        bad("resources.nodes", f"one server runs on one node, got {r['nodes']}")
    if st["tasks"] != 1:
        bad("tasks", f"must be 1 (one server per sweep point), got {st['tasks']}")
    if not 1024 <= s["port_base"] <= 55535:
        bad("serve.port_base", f"must be in 1024..55535 (ports base..base+9999 are tried), got {s['port_base']}")
    if s["ready_timeout_s"] <= 0:
        bad("serve.ready_timeout_s", f"must be > 0, got {s['ready_timeout_s']}")


def model_length_problem(path: str, max_model_len) -> str:
    """vLLM refuses a max_model_len over the model's max_position_embeddings (config.json) unless told
    to allow it: '' if it fits or either is unknown."""
    import json
    import os

    try:
        with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
            limit = json.load(f).get("max_position_embeddings")
    except (OSError, ValueError):
        return ""
    if max_model_len is None or not isinstance(limit, int) or max_model_len <= limit:
        return ""
    return (f"{max_model_len} is over the model's max_position_embeddings ({limit}, {path}/config.json); vLLM would "
            f"refuse to start")


def local_inputs(name: str, payload: Dict[str, Any]) -> List[Tuple[str, str]]:
    """(config key, path) of the model when it is a plain path (no placeholder, no URL)."""
    path = payload["serve"]["model"]
    return [(f"pipeline.stages.{name}.serve.model", path)] if path and not PLACEHOLDER.search(path) \
        and "://" not in path else []


def model_problem(path: str) -> str:
    """Why a plain-path model cannot be served ('' if it can): missing, or no config.json."""
    import os

    if not os.path.exists(path):
        return f"{path} does not exist"
    if not os.path.isfile(os.path.join(path, "config.json")):
        return f"{path} is not a Hugging Face model folder (no config.json)"
    return ""


def clients_of(plan, stage) -> Dict[str, Any]:
    """The stages that wait on this server with `after`: {name: StagePlan}."""
    return {n: s for n, s in plan.stages.items() if any(d.parent == stage.name and d.kind == "after" for d in s.deps)}


class ServeKind(Kind):
    name = "serve"
    section, schema = "serve", Serve
    payload_keys = ("serve",)
    provides_endpoint = True
    reruns_when_complete = True
    shares_points = False  # each point's clients meet their own server
    reads_stage_outputs = True

    def check_in_dag(self, p: Problems, st, stages, ancestors) -> None:
        check_serve(p.stage, st, p.errors)
        check_placeholders(p.stage, st, [(f"{p.key}.serve.model", st["serve"]["model"])], ancestors, p.errors)

    def spec_extra(self, plan, stage) -> Dict[str, Any]:
        """Serves until its clients have ended (or serve.serve_s); eager mode without GPUs."""
        return {"resources": stage.resources,
                "clients": {n: {"hash": s.hash, "tasks_per_point": s.tasks_per_point}
                            for n, s in clients_of(plan, stage).items()}}

    def client_spec(self, stage) -> Dict[str, Any]:
        return {"ready_timeout_s": stage.payloads[0]["serve"]["ready_timeout_s"]}

    def preflight(self, plan, stage) -> List[ConfigError]:
        errors = []
        for payload in stage.payloads:
            for key, path in local_inputs(stage.name, payload):
                problem = model_problem(path)
                if problem:
                    errors.append(ConfigError(problem, stage=stage.name, key=key))
                elif problem := model_length_problem(path, payload["serve"]["max_model_len"]):
                    errors.append(ConfigError(problem, stage=stage.name,
                                              key=f"pipeline.stages.{stage.name}.serve.max_model_len"))
        return errors

    def targets(self, stage) -> List[Tuple[str, str]]:
        return [(f"pipeline.stages.{stage.name}.serve", "vllm.entrypoints.openai.api_server:run_server")]

    def describe(self, plan, stage, plan_dir: Path) -> List[str]:
        s, name, resources = stage.payloads[0]["serve"], stage.name, stage.resources
        clients = list(clients_of(plan, stage))
        until = " or ".join(filter(None, [f"{', '.join(clients)} ended" if clients else "",
                                           f"{s['serve_s']:g} s" if s["serve_s"] else ""])) or "its time limit"
        return [f"{name}: vLLM serving {s['model']} as {s['served_model_name'] or name!r}, tensor_parallel "
                f"{s['tensor_parallel']} on {resources['gpus_per_node']} GPU(s); port {s['port_base']} + job id % "
                f"10000 (first free); ready = /health + a test completion within {s['ready_timeout_s']:g} s; "
                f"serves until {until}"]


KIND = ServeKind()
