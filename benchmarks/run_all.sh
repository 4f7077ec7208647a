#!/usr/bin/env bash
# Every benchmark, on the dev cluster (each script runs `scripts/dev-slurm up`, which is idempotent).
# Results: benchmarks/results/{startup,submit,status,polling,data,train_hf,generate,cluster,quantize,llamacpp_serve,speculative,runs_index,cache,scale}.json. About 85 minutes on 2 cores (polling alone: 30).
set -euo pipefail
cd "$(dirname "$0")"
PY=../.venv/bin/python
"$PY" bench_startup.py
"$PY" bench_submit.py --sbatch-latency-ms 0 50
"$PY" bench_status.py
"$PY" bench_polling.py
"$PY" bench_data.py
"$PY" bench_train_hf.py
"$PY" bench_generate.py
"$PY" bench_cluster.py
"$PY" bench_quantize.py
"$PY" bench_llamacpp_serve.py
"$PY" bench_speculative.py
"$PY" bench_runs_index.py
"$PY" bench_cache.py
"$PY" bench_scale.py
eval "$(../scripts/dev-slurm env)"
echo "jobs of $(id -un) still queued or running: $(squeue -h -u "$(id -un)" | wc -l)"
