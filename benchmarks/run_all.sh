#!/usr/bin/env bash
# Every benchmark, on the dev cluster (scripts/dev-slurm up is run by each script). Results: results/*.json
set -euo pipefail
cd "$(dirname "$0")"
PY=../.venv/bin/python
"$PY" bench_startup.py
"$PY" bench_submit.py
"$PY" bench_status.py
