"""kind=serve (an OpenAI-compatible inference server: vLLM, llama.cpp or TGI, serve.engine) on the login
side: its config section and checks, what its clients' specs say of it, what preflight reads (the
model, a draft model) and resolves in the stage's environment, which the engine picks
(launcher/engines/). A server provides an endpoint: stages that wait on it with `after` get it
(LAUNCHER_ENDPOINT_<STAGE>), and a resumed client brings it back; its task reruns when complete."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from launcher import engines
from launcher.engines.vllm import plain
from launcher.errors import ConfigError
from launcher.kinds.base import Kind, Problems
from launcher.config.placeholders import check_placeholders
from launcher.sbatch.options import gpu_request, node_gpus


@dataclass
class Speculative:
    """serve.speculative: the server proposes several tokens per step and the model checks them in one
    pass (docs/serve.md). vLLM: --speculative-config; llama.cpp: prompt lookup; TGI: --speculate."""

    method: Optional[str] = None  # null: off | ngram (prompt lookup in the context) | draft (a smaller model)
    draft_model: Optional[str] = None  # method=draft: a model folder with the target's tokenizer, or {input:<stage>}/...
    num_speculative_tokens: int = 4  # tokens proposed per step
    prompt_lookup_max: Optional[int] = None  # ngram, vLLM: the longest n-gram matched (vLLM's default)
    prompt_lookup_min: Optional[int] = None  # ngram, vLLM: the shortest


@dataclass
class Serve:
    """kind=serve: an OpenAI-compatible server on the model. The endpoint (host, port, model) is
    published to stages/<stage>/endpoints/<point>.json once the server answers its health check and a
    test completion; stages that wait on this one with `after` get it as LAUNCHER_ENDPOINT_<STAGE>."""

    engine: str = "vllm"  # vllm | llama.cpp | tgi (launcher/engines/, docs/serve.md)
    model: str = "{input}/model"  # vllm, tgi: HF folder; llama.cpp: a .gguf file (a parent's output or a path)
    served_model_name: Optional[str] = None  # default: the stage name
    tensor_parallel: int = 1  # GPUs per server (<= resources.gpus_per_node); TGI's num_shard
    max_model_len: Optional[int] = None  # llama.cpp: n_ctx (default 2048); TGI: --max-total-tokens
    dtype: str = "auto"
    chat_format: Optional[str] = None  # llama.cpp: a llama_cpp chat format name; null: the GGUF's own template
    speculative: Speculative = field(default_factory=Speculative)
    ready_timeout_s: float = 600.0  # fail (with the server's log) if not ready by then
    serve_s: Optional[float] = None  # stop after this long; null: when the stages that wait on it have ended
    port_base: int = 30000  # port = first free from base + job id % 10000
    args: List[str] = field(default_factory=list)  # more arguments of the engine's server command


def check_serve(name: str, st: Dict[str, Any], errors: List[ConfigError]) -> None:
    key, s, r = f"pipeline.stages.{name}", st["serve"], st["resources"]

    def bad(sub: str, msg: str) -> None:
        errors.append(ConfigError(msg, stage=name, key=f"{key}.{sub}"))

    tp, gpus = s["tensor_parallel"], node_gpus(r)
    if tp < 1:
        bad("serve.tensor_parallel", f"must be >= 1, got {tp}")
    elif gpus and isinstance(gpus, int) and tp > gpus:
        bad("serve.tensor_parallel", f"{tp} GPUs per server but {gpu_request(r)}: use "
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


def engine_of(p: Problems, s: Dict[str, Any]) -> Optional[engines.Engine]:
    """The Engine of serve.engine, or None (reported) when there is none of that name."""
    if s["engine"] in engines.MODULES:
        return engines.get(s["engine"])
    p.add("serve.engine", f"unknown engine {s['engine']!r}: one of {', '.join(engines.MODULES)}")
    return None


def local_inputs(name: str, payload: Dict[str, Any]) -> List[Tuple[str, str]]:
    """(config key, path) of the model when it is a plain path (no placeholder, no URL)."""
    path = payload["serve"]["model"]
    return [(f"pipeline.stages.{name}.serve.model", path)] if plain(path) else []


def clients_of(plan, stage) -> Dict[str, Any]:
    """The stages that wait on this server with `after`: {name: StagePlan}."""
    return {n: s for n, s in plan.stages.items() if any(d.parent == stage.name and d.kind == "after" for d in s.deps)}


class ServeKind(Kind):
    name = "serve"
    section, schema = "serve", Serve
    payload_keys = ("serve",)
    only_for = {"serve": [("engine", {e: engines.get(e).own_keys for e in engines.MODULES})]}
    provides_endpoint = True
    reruns_when_complete = True
    shares_points = False  # each point's clients meet their own server
    reads_stage_outputs = True

    def check_in_dag(self, p: Problems, st, stages, ancestors) -> None:
        check_serve(p.stage, st, p.errors)
        s = st["serve"]
        strings = [(f"{p.key}.serve.model", s["model"])]
        if s["speculative"]["draft_model"]:
            strings.append((f"{p.key}.serve.speculative.draft_model", s["speculative"]["draft_model"]))
        check_placeholders(p.stage, st, strings, ancestors, p.errors)
        engine = engine_of(p, s)
        if engine is not None:
            engine.check(p, s, st["resources"])
            for key, message in engines.speculative_problems(engine, s["speculative"]):
                p.add(key, message)

    def environment_name(self, st: Dict[str, Any]) -> Optional[str]:
        """The engine's environment (llama.cpp: llamacpp), when the profile defines it."""
        name = (st.get("serve") or {}).get("engine")
        return engines.get(name).environment if name in engines.MODULES else None

    def container_paths(self, stage) -> List[str]:
        """Plain model paths (a model folder, a GGUF file, a draft model) mounted into a container."""
        out = []
        for payload in stage.payloads:
            s = payload["serve"]
            out += [p for p in (s["model"], s["speculative"]["draft_model"]) if plain(p)]
        return list(dict.fromkeys(out))

    def spec_extra(self, plan, stage) -> Dict[str, Any]:
        """Serves until its clients have ended (or serve.serve_s); its resources (GPUs, CPU threads)."""
        return {"resources": stage.resources,
                "clients": {n: {"hash": s.hash, "tasks_per_point": s.tasks_per_point}
                            for n, s in clients_of(plan, stage).items()}}

    def client_spec(self, stage) -> Dict[str, Any]:
        return {"ready_timeout_s": stage.payloads[0]["serve"]["ready_timeout_s"]}

    def preflight(self, plan, stage) -> List[ConfigError]:
        errors = []
        for payload in stage.payloads:
            s = payload["serve"]
            engine = engines.get(s["engine"])
            for key, path in local_inputs(stage.name, payload):
                if problem := engine.model_problem(path):
                    errors.append(ConfigError(problem, stage=stage.name, key=key))
            for key, message in engine.preflight(s, stage.environment):
                errors.append(ConfigError(message, stage=stage.name, key=f"pipeline.stages.{stage.name}.{key}"))
        return list({(e.key, e.message): e for e in errors}.values())

    def targets(self, stage) -> List[Tuple[str, str]]:
        target = engines.get(stage.payloads[0]["serve"]["engine"]).target
        return [(f"pipeline.stages.{stage.name}.serve.engine", target)] if target else []

    def describe(self, plan, stage, plan_dir: Path) -> List[str]:
        s, name, resources = stage.payloads[0]["serve"], stage.name, stage.resources
        clients = list(clients_of(plan, stage))
        until = " or ".join(filter(None, [f"{', '.join(clients)} ended" if clients else "",
                                           f"{s['serve_s']:g} s" if s["serve_s"] else ""])) or "its time limit"
        spec = s["speculative"]
        spec_text = (f"; speculative {spec['method']} ({spec['num_speculative_tokens']} tokens"
                     f"{', draft ' + spec['draft_model'] if spec['draft_model'] else ''})" if spec["method"] else "")
        return [f"{name}: {engines.get(s['engine']).describe(s)} serving {s['model']} as "
                f"{s['served_model_name'] or name!r} on {node_gpus(resources)} GPU(s){spec_text}; port "
                f"{s['port_base']} + job id % 10000 (first free); ready = health + a test completion within "
                f"{s['ready_timeout_s']:g} s; serves until {until}"]


KIND = ServeKind()
