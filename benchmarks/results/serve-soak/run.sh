#!/bin/bash
# 10-minute soak of `continuum serve` (random:tiny, continuum policy): 12 concurrent agent
# programs, tool gaps (exp, mean 0.5 s), 10% of turns hang up mid-stream / time out.
# Pass = zero 5xx, KV integrity ok, zero leaked blocks, RSS flat over the second half.
cd "$(dirname "$0")/../../.." && OMP_NUM_THREADS=1 .venv/bin/python benchmarks/serve_soak.py \
    --duration 600 --programs 12 --scheduling-policy continuum --sample-s 30 \
    --out benchmarks/results/serve-soak/result.json
