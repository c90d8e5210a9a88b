#!/bin/sh
# Headline comparison in the simulator, H200 Llama-3.1-8B profile (converted from
# ../shared/calibration), 100 programs per workload, every policy on the same arrivals.
# Writes benchmarks/results/headline-h200-8b/{main,offload,swe-final}/{results.json,report.md,*.png}.
set -e
cd "$(dirname "$0")/../../.."
export OMP_NUM_THREADS=1
C=".venv/bin/continuum bench --target sim --profile h200-llama3.1-8b --policies all --seed 0 --no-progress"
D=benchmarks/results/headline-h200-8b
T=benchmarks/traces
# 1. Paper loads (SWE 0.025-0.125 JPS, BFCL 0.8-3.2 JPS) plus higher SWE loads.
$C --workload $T/swe-bench-like-100.jsonl --workload $T/bfcl-like-100.jsonl \
   --workload-jps swe-bench-like-100=0.025,0.075,0.125,0.5,1.0 --workload-jps bfcl-like-100=0.8,1.6,3.2 \
   --out $D/main
# 2. With a 200 GB host-memory KV tier (CPU offload).
$C --workload $T/swe-bench-like-100.jsonl --workload $T/bfcl-like-100.jsonl --offload-gb 200 \
   --workload-jps swe-bench-like-100=0.125,1.0 --workload-jps bfcl-like-100=0.8,3.2 \
   --out $D/offload
# 3. Sensitivity: SWE tokens per program read as the final context (70k tokens of KV each).
$C --workload $T/swe-bench-like-final-100.jsonl --jps 0.025,0.075,0.125 --out $D/swe-final
