#!/bin/bash
# `continuum advise` on a generated 1,000-program SWE-bench-like trace (10,987 turns), 20 GB of
# KV, vllm as the current setting, the full default grid (7 policies; then KV x0.5 / x2 for the
# best and current policies and the best policy's knobs: 15 simulations) over both cores, at
# two Poisson loads. Wall times (/usr/bin/time) on the shared 2-core box, other sessions' jobs
# running (load average 5-9): 0.7/s 6 min 35 s, 0.8/s 10 min 56 s (the deeper overload makes
# every simulation slower: about 95 s each).
cd "$(dirname "$0")/../../.." || exit 1
.venv/bin/python -m continuum.cli bench-trace swe --num-programs 1000 --seed 0 --output /tmp/h18_swe1000.jsonl
for jps in 0.7 0.8; do
  /usr/bin/time -v .venv/bin/python -m continuum.cli advise /tmp/h18_swe1000.jsonl --jps $jps --kv-gb 20 \
      --current-policy vllm --out benchmarks/results/advise-swe-1000/jps$jps
done
