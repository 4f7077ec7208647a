"""Tokens per second of the hf training backend (a tiny Llama, transformers' Trainer, CPU) run two
ways on the same tokenized data, alternating, on one machine:

  launcher:  `launcher run pipeline=train cluster=local wait=true` (the embedded local backend, the
             task runner, markers, checkpoints every 64 steps as configured).
  direct:    the same training function (jobs.adapters.trainer.train) with the very `train` config of the
             launcher's plan.json, called from a plain script in the same stage environment.

Both report the trainer's own tokens/s (training tokens / seconds in trainer.train()); the wall time
of the whole command is shown too (the launcher's includes composing, planning and its runner).
Both use one thread (SLURM_CPUS_PER_TASK=1) so the numbers compare.

    .venv/bin/python benchmarks/bench_train_hf.py [--reps 2] [--tokens 262144]
"""
import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from common import LAUNCHER, ROOT, only_run, run, save, show

CPU_PYTHON = str(ROOT / ".envs" / "cpu" / "bin" / "python")
HELPER = str(ROOT / "tests" / "integration" / "hf_train_helper.py")

DIRECT = """
import json, sys, time
from pathlib import Path
from jobs.context import TaskContext
from jobs.adapters.trainer import train

train_cfg, data, tokenizer, work = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
ctx = TaskContext(run_dir=work, run_id="direct", stage="train", task=0, index=0, num_tasks=1, point=0, params={},
                  output_dir=work / "out", checkpoint_dir=work / "ckpt", inputs={}, restart_count=0)
(work / "out").mkdir(parents=True)
print(json.dumps(train(ctx, train_cfg, data, tokenizer, log=lambda m: None)))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=262144)
    args = ap.parse_args()
    env = {**os.environ, "SLURM_CPUS_PER_TASK": "1", "HF_HUB_OFFLINE": "1"}
    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    run([CPU_PYTHON, HELPER, "data", str(work / "data")], env)
    info = json.loads((work / "data" / "data.json").read_text())
    overrides = ["pipeline=train", "cluster=local", "wait=true", "~pipeline.stages.evaluate",
                 f"pipeline.vars.data={info['a']}",
                 f"pipeline.vars.tokenizer={info['tokenizer']}", f"pipeline.vars.tokens={args.tokens}",
                 f"pipeline.vars.checkpoint_every_tokens={args.tokens // 4}"]
    rows, samples = [], {"launcher": [], "direct": []}
    for rep in range(args.reps):
        root = work / f"runs-{rep}"
        root.mkdir()
        t0 = time.perf_counter()
        run([LAUNCHER, "run", *overrides, f"run_root={root}"], env, cwd=root)
        wall = time.perf_counter() - t0
        run_dir = only_run(root)
        result = json.loads((run_dir / "stages" / "train" / "out" / "0" / "0" / "result.json").read_text())
        samples["launcher"].append({"tokens_per_s": result["tokens_per_s"], "wall_s": wall,
                                    "final_loss": result["final_loss"]})
        plan = json.loads((run_dir / "plan.json").read_text())
        train_cfg = plan["stages"][0]["payloads"][0]["train"]
        t0 = time.perf_counter()
        out = run([CPU_PYTHON, "-c", DIRECT, json.dumps(train_cfg), json.dumps({info["a"]: 1.0}), info["tokenizer"],
                   str(work / f"direct-{rep}")], {**env, "PYTHONPATH": str(ROOT)})
        wall = time.perf_counter() - t0
        result = json.loads(out.stdout.strip().splitlines()[-1])
        samples["direct"].append({"tokens_per_s": result["tokens_per_s"], "wall_s": wall,
                                  "final_loss": result["final_loss"]})
    for way, xs in samples.items():
        rows.append([way, f"{statistics.median(x['tokens_per_s'] for x in xs):,.0f}",
                     " / ".join(f"{x['tokens_per_s']:,.0f}" for x in xs),
                     f"{statistics.median(x['wall_s'] for x in xs):.1f}", f"{xs[0]['final_loss']:.6f}"])
    ratio = (statistics.median(x["tokens_per_s"] for x in samples["launcher"])
             / statistics.median(x["tokens_per_s"] for x in samples["direct"]))
    show(f"hf backend, tiny Llama, {args.tokens:,} tokens, 1 thread: launcher / direct tokens/s = {ratio:.3f} "
         f"(goal >= 0.95)", ["way", "tokens/s (median)", "each rep", "wall s (median)", "final loss"], rows)
    save("train_hf", {"tokens": args.tokens, "reps": args.reps, "samples": samples, "ratio": ratio,
                      "command": "benchmarks/bench_train_hf.py " + f"--reps {args.reps} --tokens {args.tokens}"})


if __name__ == "__main__":
    main()
