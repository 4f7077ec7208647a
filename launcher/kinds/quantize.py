"""kind=quantize on the login side: its config section, the checks made before submission and what
preflight reads. The node side is jobs/kinds/quantize.py (docs/quantize.md).

Methods:
  gguf  llama.cpp's own converter (convert_hf_to_gguf.py, from the llama-cpp-python source distribution
        the environment build installed: <env>/share/llama.cpp/) to an f16 GGUF, then llama.cpp's
        quantizer through llama-cpp-python's binding (llama_cpp.llama_model_quantize): CPU.
  bnb   bitsandbytes NF4 / FP4 (4-bit) or int8, saved as a loadable Hugging Face folder: a GPU.
  gptq  GPTQ (GPTQModel, the `gptq` environment): per-layer Hessians from calibration text (a seeded sample
        of quantize.calibration, the run's own documents), saved as a Hugging Face GPTQ folder: the CPU
        (GPTQModel's torch kernels) or GPU 0 when the task has one.

Refused before submission, naming the stage and the key: an unknown type (the valid ones listed), a
type that needs an importance matrix, bnb without GPUs (resources.gpus_per_node 0), gptq without
calibration text or with a bad group size, a model folder that does not exist or is not a Hugging Face
model, calibration data that does not exist or holds no JSONL, an environment without the converter or
whose llama-cpp-python does not know the type."""
from __future__ import annotations

import difflib
import glob
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from jobs.adapters import eval_tasks
from jobs.layout import PLACEHOLDER
from jobs.runtime import prompt_records

from launcher.errors import ConfigError
from launcher.kinds.base import DATA_CHECK_MAX_BYTES, Kind, Problems
from launcher.config.placeholders import check_placeholders
from launcher.sbatch.options import node_gpus


@dataclass
class Quantize:
    """kind=quantize: a Hugging Face model folder -> a quantized model, with what quantization costs in
    bits per byte on held-out text (the original's and the quantized model's, in result.json)."""

    method: str = "gguf"  # gguf | bnb | gptq
    type: Optional[str] = None  # gguf: q8_0, q4_k_m... (GGUF_TYPES); bnb: nf4 | fp4 | int8; gptq: int4 | int8; null: the method's first
    model: str = "{input}/model"  # HF folder: a parent's output or a path
    # gguf: llama.cpp's pre-tokenizer name (tokenizer.ggml.pre) when the converter does not recognise a
    # BPE tokenizer (a locally trained one); auto: from the tokenizer's own pre-tokenizer (docs/quantize.md)
    pre_tokenizer: str = "auto"
    eval_path: Optional[str] = None  # perplexity rows ({"text": ...}, jsonl); null: the demo's held-out clean_bpb
    eval_samples: int = 64  # documents scored for bits per byte (0: no measurement)
    # gptq: the calibration documents' "text": a .jsonl/.jsonl.gz file or a datatrove folder, e.g.
    # "{input:dedup}" (a preprocess stage); calibration_samples of them, drawn with calibration_seed
    calibration: Optional[str] = None
    calibration_samples: int = 128
    calibration_seed: int = 0
    group_size: int = 128  # gptq: weights per quantization group along a row (-1: one group per row)
    modelfile: bool = True  # gguf: an Ollama Modelfile beside the .gguf
    card: bool = True  # a model card (README.md) beside the model


# llama.cpp's quantization types this stage makes: name -> the LLAMA_FTYPE_* constant of llama-cpp-python
# (llama_cpp/llama_cpp.py 0.3.36; llama.cpp tools/quantize/quantize.cpp QUANT_OPTIONS). f32/f16/bf16 are
# written by the converter itself; the others are quantized from the f16 file by llama_model_quantize.
GGUF_TYPES: Dict[str, str] = {
    "f32": "ALL_F32", "f16": "MOSTLY_F16", "bf16": "MOSTLY_BF16", "q8_0": "MOSTLY_Q8_0",
    "q4_0": "MOSTLY_Q4_0", "q4_1": "MOSTLY_Q4_1", "q5_0": "MOSTLY_Q5_0", "q5_1": "MOSTLY_Q5_1",
    "q2_k": "MOSTLY_Q2_K", "q3_k_s": "MOSTLY_Q3_K_S", "q3_k_m": "MOSTLY_Q3_K_M", "q3_k_l": "MOSTLY_Q3_K_L",
    "q4_k_s": "MOSTLY_Q4_K_S", "q4_k_m": "MOSTLY_Q4_K_M", "q5_k_s": "MOSTLY_Q5_K_S", "q5_k_m": "MOSTLY_Q5_K_M",
    "q6_k": "MOSTLY_Q6_K", "iq4_nl": "MOSTLY_IQ4_NL", "iq4_xs": "MOSTLY_IQ4_XS", "iq3_s": "MOSTLY_IQ3_S",
    "iq3_m": "MOSTLY_IQ3_M"}
# llama.cpp refuses (or degrades) these without an importance matrix (llama-quant.cpp "imatrix
# requirement check"), which this stage does not compute
NEEDS_IMATRIX = ("iq1_s", "iq1_m", "iq2_xxs", "iq2_xs", "iq2_s", "iq2_m", "iq3_xxs", "iq3_xs", "q2_k_s")
TYPES: Dict[str, Tuple[str, ...]] = {"gguf": tuple(GGUF_TYPES), "bnb": ("nf4", "fp4", "int8"),
                                     "gptq": ("int4", "int8")}
GPU_METHODS = ("bnb",)
GPTQ_BITS = {"int4": 4, "int8": 8}  # gptq type -> GPTQModel's QuantizeConfig(bits=...)
CONVERTER = Path("share") / "llama.cpp" / "convert_hf_to_gguf.py"  # under the environment's prefix
FTYPE_LINE = re.compile(r"^LLAMA_FTYPE_(\w+)\s*=\s*\d+", re.M)


def quant_type(q: Dict[str, Any]) -> str:
    """The type a stage makes: quantize.type, or its method's first (gguf q8_0, bnb nf4, gptq int4)."""
    return (q["type"] or TYPES.get(q["method"], ("",))[0]).lower()


def check_method(p: Problems, st: Dict[str, Any]) -> None:
    q, gpus = st["quantize"], node_gpus(st["resources"])
    if q["method"] not in TYPES:
        p.add("quantize.method", f"unknown method {q['method']!r} ({', '.join(TYPES)})")
        return
    t = quant_type(q)
    if q["method"] == "gguf" and t in NEEDS_IMATRIX:
        p.add("quantize.type", f"{t!r} needs an importance matrix (llama.cpp's imatrix), which this stage does "
                               f"not compute; use one of {', '.join(TYPES['gguf'])}")
    elif t not in TYPES[q["method"]]:
        near = difflib.get_close_matches(t, TYPES[q["method"]], n=1)
        p.add("quantize.type", f"unknown {q['method']} type {t!r} (valid: {', '.join(TYPES[q['method']])})"
                               + (f"; did you mean {near[0]!r}?" if near else ""))
    if q["method"] in GPU_METHODS and not gpus:
        p.add("quantize.method", f"method {q['method']} needs a GPU (bitsandbytes CUDA kernels); "
                                 f"resources.gpus_per_node is 0 on this profile: use method gguf or gptq on CPU")
    if q["method"] == "gptq":
        check_gptq(p, q)


def check_gptq(p: Problems, q: Dict[str, Any]) -> None:
    """Calibration text is named and sampled, and the group size is one GPTQModel takes."""
    if not q["calibration"]:
        p.add("quantize.calibration", "method gptq calibrates on the run's own text: name a .jsonl file or a "
                                      "datatrove folder of {\"text\": ...} rows, e.g. \"{input:dedup}\" (a preprocess stage)")
    if q["calibration_samples"] < 1:
        p.add("quantize.calibration_samples", f"must be >= 1, got {q['calibration_samples']}")
    g = q["group_size"]
    if g != -1 and (g < 1 or g & (g - 1)):
        p.add("quantize.group_size", f"-1 (one group per row) or a power of two (32, 64, 128...), got {g}")


def check_quantize(p: Problems, st: Dict[str, Any]) -> None:
    q, r = st["quantize"], st["resources"]
    check_method(p, st)
    if not q["model"]:
        p.add("quantize.model", "kind=quantize needs a model: a Hugging Face folder ({input}/model or a path)")
    if q["eval_samples"] < 0:
        p.add("quantize.eval_samples", f"must be >= 0 (0: no bits-per-byte measurement), got {q['eval_samples']}")
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", q["pre_tokenizer"] or ""):
        p.add("quantize.pre_tokenizer", f"auto, or a llama.cpp pre-tokenizer name (gpt-2, refact, llama-bpe...), "
                                        f"got {q['pre_tokenizer']!r}")
    if st["tasks"] != 1:
        p.add("tasks", f"must be 1 (one quantized model per sweep point), got {st['tasks']}")
    if r["nodes"] != 1:
        p.add("resources.nodes", f"one model is quantized on one node, got {r['nodes']}")


def plain_paths(name: str, q: Dict[str, Any]) -> List[Tuple[str, str]]:
    """(config key, path) of the model and the evaluation rows when they are plain paths."""
    return [(f"pipeline.stages.{name}.quantize.{k}", q[k]) for k in ("model", "eval_path")
            if q[k] and not PLACEHOLDER.search(q[k]) and "://" not in q[k]] + \
        ([(f"pipeline.stages.{name}.quantize.calibration", q["calibration"])]
         if q["method"] == "gptq" and q["calibration"] and not PLACEHOLDER.search(q["calibration"]) else [])


def path_problems(key: str, path: str) -> List[str]:
    if not os.path.exists(path):
        return [f"{path} does not exist"]
    if key.endswith(".calibration"):
        try:
            prompt_records.input_files(path)
        except FileNotFoundError as e:
            return [str(e)]
        return []
    if key.endswith(".model"):
        return [] if os.path.isfile(os.path.join(path, "config.json")) else \
            [f"{path} is not a Hugging Face model folder (no config.json)"]
    if os.path.getsize(path) > DATA_CHECK_MAX_BYTES:
        return []  # the node reads the rows
    return eval_tasks.check_spec({"name": "quantize_eval", "kind": "perplexity", "path": path,
                                  "metric": "bits_per_byte"}, read=True)


def environment_prefix(python: str) -> str:
    return os.path.realpath(os.path.join(os.path.dirname(python), ".."))


def llama_cpp_ftypes(prefix: str) -> Optional[List[str]]:
    """The LLAMA_FTYPE_* names llama-cpp-python in this environment defines, read from its source (the
    login node imports no stage library); None when it is not found there."""
    for path in glob.glob(os.path.join(prefix, "lib", "python*", "site-packages", "llama_cpp", "llama_cpp.py")):
        with open(path, encoding="utf-8") as f:
            return FTYPE_LINE.findall(f.read())
    return None


def gguf_environment_problems(name: str, q: Dict[str, Any], environment: Dict[str, Any]) -> List[ConfigError]:
    """The converter is where the environment build puts it; llama-cpp-python knows the type."""
    if environment.get("container_image") or not os.path.exists(environment["python"]):
        return []  # inside an image the task finds out; an environment not built is reported as such
    prefix = environment_prefix(environment["python"])
    where = f"cluster.environments.{environment.get('name') or '?'}"
    if not os.path.isfile(os.path.join(prefix, CONVERTER)):
        return [ConfigError(f"{prefix}/{CONVERTER} does not exist: the environment build copies llama.cpp's converter "
                            f"there from llama-cpp-python's source distribution (conf/envs/<build>.share.txt; "
                            f"`launcher env build {environment.get('name')}`)", stage=name, key=where)]
    ftypes, t = llama_cpp_ftypes(prefix), quant_type(q)
    if ftypes is not None and t in GGUF_TYPES and GGUF_TYPES[t] not in ftypes:
        return [ConfigError(f"{t!r}: the llama-cpp-python in {prefix} has no LLAMA_FTYPE_{GGUF_TYPES[t]}",
                            stage=name, key=f"pipeline.stages.{name}.quantize.type")]
    return []


class QuantizeKind(Kind):
    name = "quantize"
    section, schema = "quantize", Quantize
    payload_keys = ("quantize",)
    reads_stage_outputs = True

    def environment_name(self, st: Dict[str, Any]) -> Optional[str]:
        """method gptq: the `gptq` environment (GPTQModel), when the profile defines it."""
        return "gptq" if (st.get("quantize") or {}).get("method") == "gptq" else None

    def check_in_dag(self, p: Problems, st, stages, ancestors) -> None:
        check_quantize(p, st)
        q = st["quantize"]
        check_placeholders(p.stage, st, [(f"{p.key}.quantize.{k}", q[k]) for k in ("model", "eval_path", "calibration")
                                         if q[k]],
                           ancestors, p.errors)

    def spec_extra(self, plan, stage) -> Dict[str, Any]:
        """The GPUs and CPUs a task gets (bnb checks the GPUs it sees, llama.cpp uses the CPUs) and the
        LLAMA_FTYPE_* name of each GGUF type its points make (the node has no copy of GGUF_TYPES)."""
        types = {quant_type(p["quantize"]) for p in stage.payloads}
        return {"gpus": node_gpus(stage.resources),
                "cpus": int(stage.resources.get("cpus_per_task") or 1),
                "ftypes": {t: GGUF_TYPES[t] for t in sorted(types) if t in GGUF_TYPES}}

    def preflight(self, plan, stage) -> List[ConfigError]:
        errors: List[ConfigError] = []
        for payload in stage.payloads:
            q = payload["quantize"]
            for key, path in plain_paths(stage.name, q):
                errors += [ConfigError(m, stage=stage.name, key=key) for m in path_problems(key, path)]
            if q["method"] == "gguf":
                errors += gguf_environment_problems(stage.name, q, stage.environment)
        return list({(e.key, str(e)): e for e in errors}.values())

    def targets(self, stage) -> List[Tuple[str, str]]:
        key = f"pipeline.stages.{stage.name}.quantize.method"
        method = stage.payloads[0]["quantize"]["method"]
        if method == "gguf":
            return [(key, "llama_cpp:llama_model_quantize"), (key, "gguf:GGUFWriter"),
                    (key, "transformers:AutoModelForCausalLM")]
        if method == "gptq":
            return [(key, "gptqmodel:GPTQModel"), (key, "gptqmodel:QuantizeConfig"), (key, "optimum.gptq:GPTQQuantizer")]
        return [(key, "transformers:BitsAndBytesConfig"), (key, "bitsandbytes")] if method == "bnb" else []

    def describe(self, plan, stage, plan_dir: Path) -> List[str]:
        q = stage.payloads[0]["quantize"]
        how = {"gguf": "llama.cpp's convert_hf_to_gguf.py to f16, then llama_cpp.llama_model_quantize",
               "bnb": "transformers + bitsandbytes, saved as a Hugging Face folder",
               "gptq": f"GPTQModel, group size {q['group_size']}, calibrated on {q['calibration_samples']} documents "
                       f"of {q['calibration']} (seed {q['calibration_seed']})"}.get(q["method"], q["method"])
        bpb = (f"bits per byte of the original and the quantized model on {q['eval_samples']} documents of "
               f"{q['eval_path'] or 'the demo held-out clean text'}") if q["eval_samples"] else "no bits-per-byte measurement"
        extras = [x for x, on in (("an Ollama Modelfile", q["modelfile"] and q["method"] == "gguf"),
                                  ("a model card", q["card"])) if on]
        return [f"{stage.name}: quantize {q['model']} -> {q['method']} {quant_type(q)} ({how}); {bpb}"
                + (f"; beside it {' and '.join(extras)}" if extras else "")]


KIND = QuantizeKind()
