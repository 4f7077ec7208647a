"""serve.engine=tgi: Hugging Face Text Generation Inference, `text-generation-launcher` in its container
image (TGI ships as an image: ghcr.io/huggingface/text-generation-inference), through the cluster's
pyxis support (launcher/slurm/containers.py): the stage's environment names the image and the image's
python, which runs jobs.task; the model folder is mounted at its own path; pyxis shares the host's
network (the port) and the job's GPUs. num_shard is serve.tensor_parallel. Speculation: TGI's n-gram
`--speculate N` (no separate draft model). Node side: jobs/adapters/tgi.py."""
from __future__ import annotations

from typing import Any, Dict, List, Tuple

from launcher.engines import Engine
from launcher.engines.vllm import hf_folder_problem
from launcher.kinds.base import Problems

DTYPES = ("auto", "float16", "bfloat16")  # text-generation-launcher --dtype (auto: not given)


class Tgi(Engine):
    name, label = "tgi", "Text Generation Inference"
    environment = "tgi"
    target = None  # the interpreter is inside the image: not started on the login node
    speculative_methods = ("ngram",)

    def check(self, p: Problems, s: Dict[str, Any], r: Dict[str, Any]) -> None:
        if not r["gpus_per_node"]:
            p.add("resources.gpus_per_node", "engine tgi runs TGI's CUDA image: give the stage GPUs "
                                             "(num_shard = serve.tensor_parallel of them)")
        if s["dtype"] not in DTYPES:
            p.add("serve.dtype", f"engine tgi takes {', '.join(DTYPES)}, got {s['dtype']!r}")

    def model_problem(self, path: str) -> str:
        return hf_folder_problem(path)

    def preflight(self, s: Dict[str, Any], env: Dict[str, Any]) -> List[Tuple[str, str]]:
        if not env.get("container_image"):
            where = f"cluster.environments.{env['name']}" if env.get("name") else "cluster.stage_environments"
            return [("serve.engine", f"engine tgi runs from TGI's container image, but the stage's environment "
                                     f"({env.get('name') or 'none'}) has no container_image: define an environment "
                                     f"'tgi' with container_image and python ({where}; docs/serve.md)")]
        return []

    def describe(self, s: Dict[str, Any]) -> str:
        return f"TGI (container image), num_shard {s['tensor_parallel']}"


ENGINE = Tgi()
