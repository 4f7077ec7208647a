"""kind=generate (offline batch inference with vllm.LLM) on the login side: its config section, the
checks made before submission and what preflight reads. The node side is jobs/kinds/generate.py; the
records, sharding, ids and template rendering are shared with it (jobs/runtime/prompt_records.py).

Before submission a stage is refused, naming the stage and the key, when
  - its prompt template does not render for the first record (an undefined variable, bad syntax):
    at plan time for seed lists, at preflight for an input file the login node can read; otherwise
    the task checks it at its start, with the same message;
  - its guided JSON schema is not a valid JSON schema: its shape at plan time (the login node's install
    has no jsonschema), jsonschema's check_schema in the stage's own environment at preflight;
  - tensor_parallel_size is over resources.gpus_per_node (or > 1 without GPUs; the node's GPUs are
    checked against gpus_per_node by the Slurm preflight)."""
from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from jobs.layout import PLACEHOLDER
from jobs.runtime import prompt_records
from jobs.runtime.templating import TEMPLATES_DIR

from launcher.errors import ConfigError
from launcher.kinds.base import Kind, Problems
from launcher.config.placeholders import check_placeholders
from launcher.sbatch.options import gpu_request, node_gpus


@dataclass
class Sampling:
    """vllm.SamplingParams of every request (the seed is derived per request from this one and its id)."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 256
    n: int = 1  # completions per request
    seed: Optional[int] = 0  # null: unseeded (not reproducible)
    extra: Dict[str, Any] = field(default_factory=dict)  # other SamplingParams keywords: stop, min_tokens, ignore_eos...


@dataclass
class Guided:
    """Constrained decoding through vLLM's own structured outputs: at most one of the two."""

    json: Any = None  # a JSON schema: a mapping, or a string holding JSON
    choice: Optional[List[str]] = None  # the completion is one of these strings


@dataclass
class Seeds:
    """A Cosmopedia-style prompt builder: topics x styles x audiences (x per_combination), shuffled by seed."""

    topics: List[str] = field(default_factory=list)
    styles: List[str] = field(default_factory=list)
    audiences: List[str] = field(default_factory=list)
    per_combination: int = 1
    limit: Optional[int] = None  # keep the first `limit` of the shuffled combinations
    seed: int = 0


@dataclass
class Generate:
    """kind=generate: vllm.LLM over prompt records, one shard (records i % tasks == index) per array task."""

    model: str = "{input}/model"  # HF folder: a parent's output or a path
    input: Optional[str] = None  # a .jsonl(.gz) file or a folder of datatrove JSONL; or use `seeds`
    seeds: Optional[Seeds] = None
    id_key: str = "id"  # request id field; absent: "<file>:<line>"
    prompt: str = "{{ prompt }}"  # Jinja2 template over the record's fields (StrictUndefined)
    prompt_file: Optional[str] = None  # or a template file under templates/
    chat: bool = False  # then the model's chat template (the rendered prompt as the user message)
    system: Optional[str] = None  # chat: a system message first
    sampling: Sampling = field(default_factory=Sampling)
    guided: Guided = field(default_factory=Guided)
    batch_size: int = 64  # requests per vLLM call; results are flushed after each
    keep: List[str] = field(default_factory=list)  # input fields copied to each output line ("input")
    tensor_parallel_size: int = 1  # GPUs per model (<= resources.gpus_per_node)
    max_model_len: Optional[int] = None
    dtype: str = "auto"
    llm_args: Dict[str, Any] = field(default_factory=dict)  # more vllm.LLM keyword arguments


def check_source(p: Problems, g: Dict[str, Any]) -> None:
    if bool(g["input"]) == bool(g["seeds"]):
        p.add("generate.input", "give either generate.input (a JSONL file or a datatrove folder) or generate.seeds "
                                "(topics x styles x audiences), not " + ("both" if g["input"] else "neither"))
    s = g["seeds"]
    if s:
        if not any(s[k] for k in ("topics", "styles", "audiences")):
            p.add("generate.seeds", "needs at least one non-empty list of topics, styles, audiences")
        if s["per_combination"] < 1:
            p.add("generate.seeds.per_combination", f"must be >= 1, got {s['per_combination']}")
        if s["limit"] is not None and s["limit"] < 1:
            p.add("generate.seeds.limit", f"must be >= 1 (or null: every combination), got {s['limit']}")


def check_template(p: Problems, g: Dict[str, Any]) -> None:
    """The template file exists; with seed lists, it renders for the first seed record (known now)."""
    key = "generate.prompt_file" if g["prompt_file"] else "generate.prompt"
    if g["prompt_file"] and not (TEMPLATES_DIR / g["prompt_file"]).is_file():
        p.add(key, f"templates/{g['prompt_file']} does not exist (a prompt file is a path under {TEMPLATES_DIR})")
        return
    text = prompt_records.template_text(g, TEMPLATES_DIR)
    first = prompt_records.seed_records(g["seeds"])[:1] if g["seeds"] and not p else []
    record = first[0][1] if first else {}
    problem = prompt_records.template_problem(text, record)
    if problem and (first or "not valid Jinja2" in problem):
        p.add(key, problem)


def check_sampling(p: Problems, g: Dict[str, Any]) -> None:
    s = g["sampling"]
    if s["temperature"] < 0:
        p.add("generate.sampling.temperature", f"must be >= 0, got {s['temperature']}")
    if not 0 < s["top_p"] <= 1:
        p.add("generate.sampling.top_p", f"must be in (0, 1], got {s['top_p']}")
    for k in ("max_tokens", "n"):
        if s[k] < 1:
            p.add(f"generate.sampling.{k}", f"must be >= 1, got {s[k]}")
    if "seed" in s["extra"] or any(k in s["extra"] for k in ("temperature", "top_p", "max_tokens", "n")):
        p.add("generate.sampling.extra", "sets a key generate.sampling has: set it there")
    if g["batch_size"] < 1:
        p.add("generate.batch_size", f"must be >= 1, got {g['batch_size']}")


def check_guided(p: Problems, g: Dict[str, Any]) -> None:
    gd = g["guided"]
    if gd["json"] is not None and gd["choice"] is not None:
        p.add("generate.guided", "give guided.json or guided.choice, not both")
    if gd["choice"] is not None and (not gd["choice"] or not all(isinstance(c, str) and c for c in gd["choice"])):
        p.add("generate.guided.choice", f"must be a non-empty list of non-empty strings, got {gd['choice']!r}")
    if gd["json"] is not None:
        try:
            problem = prompt_records.schema_problem(prompt_records.guided_schema(gd))
        except ValueError as e:
            problem = str(e)
        if problem:
            p.add("generate.guided.json", problem)


def check_parallel(p: Problems, st: Dict[str, Any]) -> None:
    tp, gpus = st["generate"]["tensor_parallel_size"], node_gpus(st["resources"])
    if tp < 1:
        p.add("generate.tensor_parallel_size", f"must be >= 1, got {tp}")
    elif gpus and tp > gpus:
        p.add("generate.tensor_parallel_size", f"{tp} GPUs per model but {gpu_request(st['resources'])}: use "
                                               f"tensor_parallel_size <= {gpus}")
    elif not gpus and tp != 1:
        p.add("generate.tensor_parallel_size", f"{tp} without GPUs (resources.gpus_per_node is 0): CPU inference "
                                               f"runs one process (tensor_parallel_size=1)")
    if st["resources"]["nodes"] != 1:
        p.add("resources.nodes", f"one model runs on one node, got {st['resources']['nodes']}")


def plain(name: str, payload: Dict[str, Any]) -> List[Tuple[str, str]]:
    """(config key, path) of the model and the input when they are plain paths (no placeholder, no URL)."""
    g = payload["generate"]
    return [(f"pipeline.stages.{name}.generate.{k}", g[k]) for k in ("model", "input")
            if g[k] and not PLACEHOLDER.search(g[k]) and "://" not in g[k]]


def has_chat_template(model: str) -> bool:
    if os.path.isfile(os.path.join(model, "chat_template.jinja")):
        return True
    try:
        with open(os.path.join(model, "tokenizer_config.json"), encoding="utf-8") as f:
            return bool(json.load(f).get("chat_template"))
    except (OSError, ValueError):
        return False


def input_problems(name: str, g: Dict[str, Any]) -> List[ConfigError]:
    """A readable input: its first record renders the template (the same check the task makes)."""
    key = f"pipeline.stages.{name}.generate"
    try:
        first = prompt_records.first_record(g)
    except (OSError, ValueError) as e:
        return [ConfigError(str(e), stage=name, key=f"{key}.input")]
    if first is None:
        return [ConfigError(f"{g['input']} holds no records", stage=name, key=f"{key}.input")]
    problem = prompt_records.template_problem(prompt_records.template_text(g, TEMPLATES_DIR), first)
    tkey = f"{key}.prompt_file" if g["prompt_file"] else f"{key}.prompt"
    return [ConfigError(problem, stage=name, key=tkey)] if problem else []


def schema_in_environment(python: str, schema: Any) -> Tuple[str, str]:
    """(problem, how checked) of a JSON schema, checked by jsonschema in the stage's environment
    (`python -m jobs.runtime.prompt_records`); ('', '') when that interpreter cannot run it (preflight's
    environment check reports a broken interpreter)."""
    root = Path(__file__).resolve().parent.parent.parent
    try:
        p = subprocess.run([python, "-m", "jobs.runtime.prompt_records"], input=json.dumps(schema), text=True,
                           capture_output=True, timeout=60, cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
        out = json.loads(p.stdout)
        return out["problem"], out["checked"]
    except (OSError, ValueError, KeyError, subprocess.TimeoutExpired):
        return "", ""


class GenerateKind(Kind):
    name = "generate"
    section, schema = "generate", Generate
    payload_keys = ("generate",)
    reads_stage_outputs = True

    def check_in_dag(self, p: Problems, st, stages, ancestors) -> None:
        g = st["generate"]
        check_source(p, g)
        check_template(p, g)
        check_sampling(p, g)
        check_guided(p, g)
        check_parallel(p, st)
        check_placeholders(p.stage, st, [(f"{p.key}.generate.{k}", g[k]) for k in ("model", "input") if g[k]],
                           ancestors, p.errors)

    def spec_extra(self, plan, stage) -> Dict[str, Any]:
        """The GPUs a task gets: the node side checks tensor_parallel_size against what it sees."""
        return {"gpus": node_gpus(stage.resources)}

    def preflight(self, plan, stage) -> List[ConfigError]:
        errors: List[ConfigError] = []
        key = f"pipeline.stages.{stage.name}.generate"
        for payload in stage.payloads:
            g = payload["generate"]
            for k, path in plain(stage.name, payload):
                if not os.path.exists(path):
                    errors.append(ConfigError(f"{path} does not exist", stage=stage.name, key=k))
                elif k.endswith(".model") and not os.path.isfile(os.path.join(path, "config.json")):
                    errors.append(ConfigError(f"{path} is not a Hugging Face model folder (no config.json)",
                                              stage=stage.name, key=k))
                elif k.endswith(".model") and g["chat"] and not has_chat_template(path):
                    errors.append(ConfigError(f"{path} has no chat template (tokenizer_config.json chat_template or "
                                              f"chat_template.jinja): use chat: false", stage=stage.name,
                                              key=f"{key}.chat"))
                elif k.endswith(".input"):
                    errors += input_problems(stage.name, g)
            if g["guided"]["json"] is not None and not stage.environment.get("container_image"):
                problem, _ = schema_in_environment(stage.environment["python"],
                                                   prompt_records.guided_schema(g["guided"]))
                if problem:
                    errors.append(ConfigError(problem, stage=stage.name, key=f"{key}.guided.json"))
        return list({(e.key, str(e)): e for e in errors}.values())

    def targets(self, stage) -> List[Tuple[str, str]]:
        return [(f"pipeline.stages.{stage.name}.generate", "vllm.LLM"),
                (f"pipeline.stages.{stage.name}.generate.sampling", "vllm.SamplingParams")]

    def describe(self, plan, stage, plan_dir: Path) -> List[str]:
        g, s = stage.payloads[0]["generate"], stage.payloads[0]["generate"]["sampling"]
        source = (f"seeds ({len(prompt_records.seed_records(g['seeds']))} records: topics x styles x audiences)"
                  if g["seeds"] else g["input"])
        guided = " guided by a JSON schema;" if g["guided"]["json"] is not None else \
            (f" guided to one of {g['guided']['choice']};" if g["guided"]["choice"] else "")
        return [f"{stage.name}: vllm.LLM on {g['model']} over {source}, {stage.tasks_per_point} shard(s) (record i "
                f"-> task i % {stage.tasks_per_point}); prompt {'templates/' + g['prompt_file'] if g['prompt_file'] else repr(g['prompt'])}"
                f"{' + the chat template' if g['chat'] else ''}; temperature {s['temperature']}, top_p {s['top_p']}, "
                f"max_tokens {s['max_tokens']}, n {s['n']}, seed {s['seed']};{guided} tensor_parallel_size "
                f"{g['tensor_parallel_size']}; batches of {g['batch_size']} appended to a resumable "
                f"generations.jsonl"]


KIND = GenerateKind()
