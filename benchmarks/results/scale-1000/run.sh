#!/bin/sh
# Paper-scale speed check: 1000 SWE-bench-like programs with 70k-token final contexts
# (KV demand far above the H200's 107 GB), H200 8B profile, vllm and continuum.
set -e
cd "$(dirname "$0")/../../.."
export OMP_NUM_THREADS=1
.venv/bin/continuum bench-trace swe --num-programs 1000 --seed 0 --tokens-mode final --output /tmp/swe-final-1000.jsonl
.venv/bin/continuum bench --target sim --profile h200-llama3.1-8b --workload /tmp/swe-final-1000.jsonl \
  --jps 0.2 --policies vllm,continuum --no-progress --out benchmarks/results/scale-1000
