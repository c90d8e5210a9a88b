#!/bin/bash
# `continuum advise` on a generated 1,000-program SWE-bench-like trace (10,987 turns), Poisson
# 0.8 programs/s, 20 GB of KV, against vllm as the current setting; the full default grid
# (7 policies, then KV x0.5 / x2 and the best policy's knobs: 15 simulations), every core.
# Timed with /usr/bin/time: 10 min 56 s wall on the shared 2-core box (load average 7-9 from
# other sessions' jobs; about 95 s per simulation).
cd "$(dirname "$0")/../../.." || exit 1
.venv/bin/python -m continuum.cli bench-trace swe --num-programs 1000 --seed 0 --output /tmp/h18_swe1000.jsonl
/usr/bin/time -v .venv/bin/python -m continuum.cli advise /tmp/h18_swe1000.jsonl --jps 0.8 --kv-gb 20 \
    --current-policy vllm --out benchmarks/results/advise-swe-1000
