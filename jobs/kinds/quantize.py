"""kind=quantize on the compute node: one Hugging Face model folder -> one quantized model, and what the
quantization cost in bits per byte (docs/quantize.md).

method gguf (the llamacpp environment, CPU):
1. llama.cpp's converter to an f16 GGUF (f32/bf16 when that is the type asked), in a child process
   (jobs/adapters/gguf.py: a BPE tokenizer it does not know gets quantize.pre_tokenizer);
2. unless the type is a float one, llama.cpp's quantizer through llama_cpp.llama_model_quantize, in a
   child process too, threads = the task's CPUs;
3. bits per byte of the original (transformers, float32) and of the GGUF (llama_cpp.Llama with
   logits_all, the same token ids: jobs/adapters/bits_per_byte.py) on quantize.eval_samples documents;
4. beside <output>/model.gguf: an Ollama Modelfile (jobs/adapters/ollama.py) and README.md, the model
   card (jobs/adapters/hub_card.py).
Each step leaves its file in the task's checkpoint folder (kept across requeues) and is not redone by
a requeued attempt; the stop signal between steps and between scored windows requeues the task.

method bnb (a GPU): transformers + bitsandbytes (NF4/FP4 4-bit or int8), saved with save_pretrained
to <output>/model (a folder transformers loads as it is), bits per byte of both on the GPU.

method gptq (the gptq environment; the CPU, or GPU 0 when the task has one): GPTQModel with
QuantizeConfig(bits, group_size) calibrated on quantize.calibration_samples documents of
quantize.calibration drawn with quantize.calibration_seed, saved to <output>/model (a Hugging Face GPTQ
folder: transformers loads it through optimum, GPTQModel.load too), bits per byte of both on that device.
The quantized folder is made in the checkpoint folder with a marker of what it was made from, so a
requeued attempt does not calibrate again.

result.json: {"quantization": {method, type, files, size_mb, original_size_mb, bits_per_byte: {original,
quantized, delta, relative}, eval: {...}, tokenizer_agreement}, "seconds": {...}, ...}; `launcher report`
shows the quantization rows (launcher/reports/quantization.py)."""
from __future__ import annotations

import os
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from jobs import layout
from jobs.adapters import bits_per_byte as bpb
from jobs.runtime import prompt_records

reruns_when_complete = False
resolves_hub_references = True

FLOAT_TYPES = ("f32", "f16", "bf16")  # written by the converter itself
WEIGHTS = ("*.safetensors", "*.bin", "*.gguf", "*.pt")


class QuantizeConfigError(ValueError):
    """Bad stage config found on the node: names stage and key."""


def bad(task, key: str, message: str) -> QuantizeConfigError:
    return QuantizeConfigError(f"stage '{task.stage}': pipeline.stages.{task.stage}.quantize.{key}: {message}")


def size_of(folder: Path, names: Optional[List[str]] = None) -> int:
    """Bytes of a model's weight files (or of the named files) in a folder."""
    if names is not None:
        return sum((folder / n).stat().st_size for n in names if (folder / n).is_file())
    return sum(p.stat().st_size for pat in WEIGHTS for p in folder.rglob(pat) if p.is_file())


def step(task, done: Path, what: str, argv: List[str], produces: Path) -> float:
    """Run one child step unless its marker says a previous attempt ran the same command to the end and
    its file is there; seconds it took."""
    before = layout.read_json(done, {}) or {}
    if before.get("argv") == argv and produces.exists():
        task.log(f"quantize: {what}: done by an earlier attempt ({done.name})")
        return float(before.get("seconds") or 0.0)
    t0 = time.time()
    task.log(f"quantize: {what}: " + " ".join(argv))
    task.run_child(argv, task.environment(), failure=f"quantize: {what} failed (exit {{rc}}); its output is above")
    layout.atomic_write_json(done, {"argv": argv, "seconds": round(time.time() - t0, 2)})
    return time.time() - t0


def threads(task) -> int:
    return max(1, int(os.environ.get("SLURM_CPUS_PER_TASK") or task.spec.get("cpus") or os.cpu_count() or 1))


def texts_for(task, q: Dict[str, Any]) -> tuple[str, List[str]]:
    """(path, documents) scored for bits per byte: quantize.eval_path, else the demo's held-out text."""
    n = int(q["eval_samples"])
    if q["eval_path"]:
        if not Path(q["eval_path"]).is_file():
            raise bad(task, "eval_path", f"{q['eval_path']} is not a file")
        return q["eval_path"], bpb.documents(q["eval_path"], n)
    return bpb.demo_documents(layout.stage_dir(task.run_dir, task.stage) / "tasks", n)


def scored(task, cache: Path, key: Dict[str, Any], fn) -> Dict[str, Any]:
    """fn()'s measurement, kept in `cache` with what it measured (`key`): a requeued attempt with the same
    key reads it. The stop signal requeues."""
    before = layout.read_json(cache, {}) or {}
    if before.get("key") == key:
        return before["value"]
    try:
        out = fn()
    except InterruptedError:
        task.ctx.requeue()
    layout.atomic_write_json(cache, {"key": key, "value": out})
    return out


def gguf_eval(task, q: Dict[str, Any], model: str, gguf: Path, work: Path) -> Dict[str, Any]:
    """Bits per byte of the original (transformers) and the GGUF (llama.cpp) on the same token ids, and
    whether llama.cpp's tokenizer gives those ids."""
    from jobs.adapters.gguf import open_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, texts = texts_for(task, q)
    tok = AutoTokenizer.from_pretrained(model)
    start, docs = bpb.encode(tok, texts)

    def original():
        m = AutoModelForCausalLM.from_pretrained(model, dtype="float32").eval()
        window = bpb.window_of(getattr(m.config, "max_position_embeddings", None))
        return dict(bpb.total(bpb.hf_scorer(m), start, docs, texts, window, task.ctx.should_stop), window=window)

    key = {"model": model, "eval": path, "samples": len(texts)}
    first = scored(task, work / "eval-original.json", key, original)

    def quantized():
        llm = open_model(gguf, first["window"] + 1, threads(task))
        same = sum(llm.tokenize(t.encode("utf-8"), add_bos=False, special=False) == d for t, d in zip(texts, docs))
        out = bpb.total(bpb.llama_scorer(llm), start, docs, texts, first["window"], task.ctx.should_stop)
        return dict(out, tokenizer_agreement=same / max(1, len(texts)))

    second = scored(task, work / f"eval-{gguf.stem}.json", {**key, "gguf": str(gguf)}, quantized)
    return summary(path, first, second)


def summary(path: str, first: Dict[str, Any], second: Dict[str, Any]) -> Dict[str, Any]:
    a, b = first["bits_per_byte"], second["bits_per_byte"]
    return {"bits_per_byte": {"original": a, "quantized": b, "delta": b - a, "relative": (b - a) / a if a else None},
            "eval": {"path": str(path), "documents": first["documents"], "tokens": first["tokens"],
                     "bytes": first["bytes"], "window": first.get("window"),
                     "seconds": {"original": first["seconds"], "quantized": second["seconds"]}},
            "tokenizer_agreement": second.get("tokenizer_agreement")}


def write_extras(task, q: Dict[str, Any], model: str, out: Path, quant: Dict[str, Any], gguf: Optional[str]) -> Dict[str, Any]:
    """The Modelfile (gguf) and the model card beside the model; what was written."""
    from jobs.adapters import hub_card

    extras: Dict[str, Any] = {}
    if gguf and q["modelfile"]:
        from jobs.adapters import ollama
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(model)
        apply = (lambda msgs, gen: tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)) \
            if getattr(tok, "chat_template", None) else None
        text, has_template = ollama.modelfile(apply, tok.eos_token, gguf, stage=task.stage, run_id=task.spec["run_id"],
                                              source=model, name=task.stage)
        layout.atomic_write_text(out / "Modelfile", text)
        extras["modelfile"] = {"file": "Modelfile", "template": has_template}
        task.log(f"quantize: Modelfile written ({'with' if has_template else 'without'} a TEMPLATE"
                 f"{'' if has_template else ': the chat template is not per-message pieces; Ollama uses the GGUF metadata'})")
    if q["card"]:
        card = hub_card.render(task.run_dir, task.stage, task.point, {"repo_id": task.stage, "repo_type": "model"},
                               model, quantization=quant)
        layout.atomic_write_text(out / "README.md", card)
        extras["card"] = "README.md"
    return extras


def run_gguf(task, q: Dict[str, Any], model: str, qtype: str) -> Dict[str, Any]:
    from jobs.adapters import gguf as tools

    work, out = task.ctx.checkpoint_dir, task.ctx.output_dir
    work.mkdir(parents=True, exist_ok=True)
    conv = tools.converter(sys.executable)
    if not conv.is_file():
        raise FileNotFoundError(f"{conv} does not exist: the environment build copies llama.cpp's converter there "
                                f"(conf/envs/<build>.share.txt, `launcher env build`)")
    outtype = qtype if qtype in FLOAT_TYPES else "f16"
    converted = work / f"model-{outtype}.gguf"
    seconds = {"convert": step(task, work / "convert.done", f"convert to {outtype}",
                               tools.convert_argv(sys.executable, conv, model, converted, outtype, q["pre_tokenizer"]),
                               converted)}
    final = converted
    if qtype not in FLOAT_TYPES:
        final = work / f"model-{qtype}.gguf"
        seconds["quantize"] = step(task, work / f"quantize-{qtype}.done", f"quantize to {qtype}",
                                   tools.quantize_argv(sys.executable, converted, final, task.spec["ftypes"][qtype],
                                                       threads(task)), final)
    if task.ctx.should_stop():
        task.ctx.requeue()
    quant = {"method": "gguf", "type": qtype, "files": ["model.gguf"], "size_mb": final.stat().st_size / 1e6,
             "original_size_mb": size_of(Path(model)) / 1e6, "f16_size_mb": converted.stat().st_size / 1e6}
    if int(q["eval_samples"]):
        quant.update(gguf_eval(task, q, model, final, work))
    out.mkdir(parents=True, exist_ok=True)
    os.replace(final, out / "model.gguf")  # moved, not copied: a rerun of this attempt redoes the last step
    extras = write_extras(task, q, model, out, quant, "model.gguf")
    converted.unlink(missing_ok=True)  # the f16 intermediate (when it is not the model itself)
    return {"quantization": quant, "seconds": {k: round(v, 2) for k, v in seconds.items()}, "model": model,
            "gguf": str(task.final_out / "model.gguf"), **extras}


def run_bnb(task, q: Dict[str, Any], model: str, qtype: str) -> Dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    if not torch.cuda.is_available():
        raise bad(task, "method", f"bnb needs a GPU and this task sees none (CUDA_VISIBLE_DEVICES="
                                  f"{os.environ.get('CUDA_VISIBLE_DEVICES')}, spec gpus {task.spec.get('gpus')})")
    cfg = BitsAndBytesConfig(load_in_8bit=True) if qtype == "int8" else BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type=qtype, bnb_4bit_compute_dtype=torch.bfloat16,
        bnb_4bit_use_double_quant=True)
    t0 = time.time()
    quantized = AutoModelForCausalLM.from_pretrained(model, quantization_config=cfg, device_map={"": 0}).eval()
    dest = task.ctx.output_dir / "model"
    quantized.save_pretrained(dest)
    tok = AutoTokenizer.from_pretrained(model)
    tok.save_pretrained(dest)
    seconds = {"quantize": round(time.time() - t0, 2)}
    quant = {"method": "bnb", "type": qtype, "files": ["model/"], "size_mb": size_of(dest) / 1e6,
             "original_size_mb": size_of(Path(model)) / 1e6}
    if int(q["eval_samples"]):
        path, texts = texts_for(task, q)
        start, docs = bpb.encode(tok, texts)
        window = bpb.window_of(getattr(quantized.config, "max_position_embeddings", None))
        original = AutoModelForCausalLM.from_pretrained(model, dtype=torch.bfloat16, device_map={"": 0}).eval()
        first = dict(bpb.total(bpb.hf_scorer(original), start, docs, texts, window), window=window)
        del original
        quant.update(summary(path, first, bpb.total(bpb.hf_scorer(quantized), start, docs, texts, window)))
    extras = write_extras(task, q, model, task.ctx.output_dir, quant, None)
    return {"quantization": quant, "seconds": seconds, "model": model, "model_dir": str(task.final_out / "model"),
            "gpu": torch.cuda.get_device_name(0), **extras}


def calibration_texts(task, q: Dict[str, Any]) -> List[str]:
    """quantize.calibration_samples non-empty "text"s of quantize.calibration, a uniform sample drawn with
    quantize.calibration_seed (reservoir sampling: one pass, the sample in memory), in file order."""
    n, rng, keep, seen = int(q["calibration_samples"]), random.Random(int(q["calibration_seed"])), [], 0
    try:
        for _f, _line, _id, rec in prompt_records.raw_records(q["calibration"]):
            text = rec.get("text")
            if not isinstance(text, str) or not text.strip():
                continue
            if len(keep) < n:
                keep.append((seen, text))
            elif (j := rng.randrange(seen + 1)) < n:
                keep[j] = (seen, text)
            seen += 1
    except (FileNotFoundError, ValueError) as e:
        raise bad(task, "calibration", str(e)) from None
    if not keep:
        raise bad(task, "calibration", f"{q['calibration']} holds no non-empty \"text\"")
    task.log(f"quantize: calibration: {len(keep)} of {seen} documents of {q['calibration']} (seed {q['calibration_seed']})")
    return [t for _, t in sorted(keep)]


def gptq_quantize(task, q: Dict[str, Any], model: str, bits: int, dest: Path, device: str) -> float:
    """GPTQModel: load, calibrate, quantize, save to `dest`, unless a marker says an earlier attempt made
    it from the same model, settings and calibration; seconds it took."""
    texts = calibration_texts(task, q)
    key = {"model": model, "bits": bits, "group_size": int(q["group_size"]), "texts": len(texts),
           "calibration": q["calibration"], "seed": int(q["calibration_seed"]), "device": device}
    done = dest.with_name(dest.name + ".done")
    before = layout.read_json(done, {}) or {}
    if before.get("key") == key and (dest / "config.json").is_file():
        task.log(f"quantize: gptq: done by an earlier attempt ({done.name})")
        return float(before.get("seconds") or 0.0)
    # GPTQModel sizes its CPU pool from os.cpu_count(): on 2 CPUs it gets 1 worker and then refuses its
    # own 2-worker model loader ("requests 2 workers but parent 'cpu' only has 1"): give it the task's CPUs.
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(max(2, threads(task))))
    from gptqmodel import GPTQModel, QuantizeConfig

    t0 = time.time()
    shutil.rmtree(dest, ignore_errors=True)
    m = GPTQModel.load(model, QuantizeConfig(bits=bits, group_size=int(q["group_size"])), device=device)
    m.quantize(texts, batch_size=1)
    m.save(str(dest))
    del m
    layout.atomic_write_json(done, {"key": key, "seconds": round(time.time() - t0, 2)})
    return time.time() - t0


def run_gptq(task, q: Dict[str, Any], model: str, qtype: str) -> Dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    bits = {"int4": 4, "int8": 8}.get(qtype)
    if bits is None:
        raise bad(task, "type", f"unknown gptq type {qtype!r} (int4, int8)")
    device = "cuda:0" if torch.cuda.is_available() else "cpu"
    work, out = task.ctx.checkpoint_dir, task.ctx.output_dir
    work.mkdir(parents=True, exist_ok=True)
    made = work / f"model-gptq-{qtype}"
    seconds = {"quantize": round(gptq_quantize(task, q, model, bits, made, device), 2)}
    if task.ctx.should_stop():
        task.ctx.requeue()
    quant = {"method": "gptq", "type": qtype, "bits": bits, "group_size": int(q["group_size"]), "device": device,
             "files": ["model/"], "size_mb": size_of(made) / 1e6, "original_size_mb": size_of(Path(model)) / 1e6}
    if int(q["eval_samples"]):
        from gptqmodel import GPTQModel

        path, texts = texts_for(task, q)
        start, docs = bpb.encode(AutoTokenizer.from_pretrained(model), texts)
        original = AutoModelForCausalLM.from_pretrained(model, dtype="float32").to(device).eval()
        window = bpb.window_of(getattr(original.config, "max_position_embeddings", None))
        first = dict(bpb.total(bpb.hf_scorer(original), start, docs, texts, window), window=window)
        del original
        quantized = GPTQModel.load(str(made), device=device).model.eval()  # on the CPU: its torch kernel
        quant.update(summary(path, first, bpb.total(bpb.hf_scorer(quantized), start, docs, texts, window)))
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out / "model", ignore_errors=True)
    os.replace(made, out / "model")
    extras = write_extras(task, q, model, out, quant, None)
    return {"quantization": quant, "seconds": seconds, "model": model, "model_dir": str(task.final_out / "model"),
            "calibration": {"path": q["calibration"], "samples": int(q["calibration_samples"]),
                            "seed": int(q["calibration_seed"])}, **extras}


def run(task) -> Dict[str, Any]:
    q = layout.Folders(task.spec, task.point).fill(task.payload["quantize"])
    model = q["model"]
    if not (Path(model) / "config.json").is_file():
        raise bad(task, "model", f"{model} is not a Hugging Face model folder (no config.json)")
    qtype = (q["type"] or {"gguf": "q8_0", "bnb": "nf4", "gptq": "int4"}.get(q["method"], "")).lower()
    methods = {"gguf": run_gguf, "bnb": run_bnb, "gptq": run_gptq}
    if q["method"] not in methods:
        raise bad(task, "method", f"{q['method']!r} has no runner here ({', '.join(methods)})")
    task.log(f"quantize: {model} -> {q['method']} {qtype}")
    result = methods[q["method"]](task, q, model, qtype)
    b = result["quantization"].get("bits_per_byte")
    task.log(f"quantize: {result['quantization']['size_mb']:.2f} MB (from {result['quantization']['original_size_mb']:.2f} MB)"
             + (f"; bits per byte {b['original']:.4f} -> {b['quantized']:.4f} ({b['delta']:+.4f})" if b else ""))
    return result
