"""GGUF conversion + quantization time of kind=quantize (method gguf) on the tiny model of
jobs/demo/tiny_model.py (--hidden 256, so the k-quant is real), two ways, one run each, on one machine:

  launcher:  `launcher run pipeline=quantize cluster=local wait=true` with only the q4_k_m stage and no
             bits-per-byte measurement (eval_samples=0). Its result.json gives the seconds of the
             conversion and of the quantization (each a child process of the task, interpreter start
             included); the wall time of the whole command is shown too (planning, preflight, the
             local scheduler, the task's start).
  direct:    the same two steps by hand in the same environment: llama.cpp's convert_hf_to_gguf.py
             (through jobs/adapters/gguf.py, the converter plus the one pre-tokenizer name this
             locally trained tokenizer needs; llama.cpp alone refuses the tokenizer) to f16, then
             llama_cpp.llama_model_quantize to q4_k_m.

Also the environment build's compile time of llama-cpp-python (no Linux wheel: pip compiles llama.cpp),
read from a `/usr/bin/time -v pip install ...` log (--build-log; the probe build's by default).

    .venv/bin/python benchmarks/bench_quantize.py [--type q4_k_m] [--build-log /tmp/llprobe/build.log]
"""
import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

from common import LAUNCHER, ROOT, only_run, run, save, show

PYTHON = str(ROOT / ".envs" / "llamacpp" / "bin" / "python")
FTYPES = {"q8_0": "MOSTLY_Q8_0", "q4_k_m": "MOSTLY_Q4_K_M", "q5_k_m": "MOSTLY_Q5_K_M", "q6_k": "MOSTLY_Q6_K"}


def compile_time(log: Path) -> dict:
    """Wall and CPU seconds of the compile, from /usr/bin/time -v's lines in the log; {} if absent."""
    if not log.is_file():
        return {}
    text = log.read_text(errors="replace")
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", text)
    user = re.search(r"User time \(seconds\): ([\d.]+)", text)
    system = re.search(r"System time \(seconds\): ([\d.]+)", text)
    command = re.search(r'Command being timed: "(.*)"', text)
    if not wall:
        return {}
    parts = [float(x) for x in wall.group(1).split(":")]
    seconds = sum(v * 60 ** i for i, v in enumerate(reversed(parts)))
    return {"wall_s": seconds, "cpu_s": float(user.group(1)) + float(system.group(1)) if user and system else None,
            "command": command.group(1) if command else None, "log": str(log)}


def launcher_way(work: Path, model: Path, qtype: str, env: dict) -> dict:
    root = work / "runs"
    root.mkdir()
    t0 = time.perf_counter()
    run([LAUNCHER, "run", "pipeline=quantize", "cluster=local", "wait=true", "poll_s=0.5", f"run_root={root}",
         f"pipeline.vars.model={model}", "pipeline.vars.eval_samples=0", "~pipeline.stages.q8",
         f"pipeline.stages.q4.quantize.type={qtype}"], env, cwd=root)
    wall = time.perf_counter() - t0
    res = json.loads((only_run(root) / "stages" / "q4" / "out" / "0" / "0" / "result.json").read_text())
    return {"convert_s": res["seconds"]["convert"], "quantize_s": res["seconds"]["quantize"], "wall_s": wall,
            "size_mb": res["quantization"]["size_mb"]}


def direct_way(work: Path, model: Path, qtype: str, env: dict) -> dict:
    from_here = ROOT / ".envs" / "llamacpp" / "share" / "llama.cpp" / "convert_hf_to_gguf.py"
    f16, out = work / "direct-f16.gguf", work / f"direct-{qtype}.gguf"
    t0 = time.perf_counter()
    run([PYTHON, "-m", "jobs.adapters.gguf", "convert", str(from_here), str(model), str(f16), "f16", "gpt-2"],
        env, cwd=ROOT)
    t1 = time.perf_counter()
    code = ("import ctypes, sys, llama_cpp; p = llama_cpp.llama_model_quantize_default_params(); "
            f"p.ftype = llama_cpp.LLAMA_FTYPE_{FTYPES[qtype]}; p.nthread = {os.cpu_count()}; "
            "sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(p)))")
    run([PYTHON, "-c", code, str(f16), str(out)], env, cwd=work)
    t2 = time.perf_counter()
    return {"convert_s": t1 - t0, "quantize_s": t2 - t1, "wall_s": t2 - t0, "size_mb": out.stat().st_size / 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--type", default="q4_k_m", choices=sorted(FTYPES))
    ap.add_argument("--build-log", type=Path, default=Path("/tmp/llprobe/build.log"))
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-quantize-"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    model = work / "model"
    run([PYTHON, "-m", "jobs.demo.tiny_model", str(model), "--hidden", "256"], env, cwd=ROOT)
    launcher = launcher_way(work, model, args.type, env)
    direct = direct_way(work, model, args.type, env)
    rows = [[way, f"{r['convert_s']:.2f}", f"{r['quantize_s']:.2f}", f"{r['convert_s'] + r['quantize_s']:.2f}",
             f"{r['wall_s']:.1f}", f"{r['size_mb']:.2f}"] for way, r in (("launcher", launcher), ("direct", direct))]
    ratio = (direct["convert_s"] + direct["quantize_s"]) / (launcher["convert_s"] + launcher["quantize_s"])
    show(f"GGUF {args.type} of the tiny model (hidden 256): direct / launcher conversion+quantization time = "
         f"{ratio:.3f}", ["way", "convert s", "quantize s", "both s", "wall s", "MB"], rows)
    build = compile_time(args.build_log)
    if build:
        print(f"environment build: llama-cpp-python compiled in {build['wall_s']:.0f} s wall, "
              f"{build['cpu_s']:.0f} s CPU ({build['command']})")
    save("quantize", {"type": args.type, "launcher": launcher, "direct": direct, "ratio_direct_over_launcher": ratio,
                      "compile": build, "command": "benchmarks/bench_quantize.py " + " ".join(sys.argv[1:])})


if __name__ == "__main__":
    main()
