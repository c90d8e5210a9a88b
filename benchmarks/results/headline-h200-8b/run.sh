#!/bin/sh
# Headline comparison in the simulator, H200 Llama-3.1-8B profile (../shared/calibration), 100 programs per workload.
set -e
cd "$(dirname "$0")/../../.."
export OMP_NUM_THREADS=1
.venv/bin/continuum bench --target sim --profile h200-llama3.1-8b --workload swe --workload bfcl \
  --workload-jps swe=0.025,0.075,0.125,0.5,1.0 --workload-jps bfcl=0.8,1.6,3.2 \
  --num-programs 100 --policies all --seed 0 --no-progress --out benchmarks/results/headline-h200-8b
.venv/bin/continuum bench --target sim --profile h200-llama3.1-8b --workload swe --workload bfcl \
  --workload-jps swe=0.125,1.0 --workload-jps bfcl=3.2 --offload-gb 200 \
  --num-programs 100 --policies all --seed 0 --no-progress --out benchmarks/results/headline-h200-8b-offload
