#!/bin/sh
# Zero-config programs over HTTP (issue 18): the mean-JCT gain of continuum+ over vllm that a
# client keeps when it sends no program ids. matrix-cpu's mix point where continuum+ gains
# clearly on the in-process engine (24 programs, tokens x0.05, times x0.02, at most 8 turns,
# random llama-80m, 32 MiB of KV, 2 programs/s), replayed over HTTP through a fresh
# `continuum serve` per run: vllm / continuum+ with ids / continuum+ with only tool names (no
# ids: the server recognises the programs) / continuum+ with nothing (an unmodified client),
# interleaved in 5 rounds of the same trace and arrivals. Machine: the project's shared 2-core
# CPU box (another session compiling and benchmarking at the same time), OMP_NUM_THREADS=1 per
# server; wall-clock, so noisy: read the per-round numbers. Measured 2026-12-06 14:28-14:43 UTC
# (load average 2.7-3.7). superseded-3-rounds.json: an earlier run (13:58-14:10, busier box)
# whose id-less client still sent the chat turns' `human` think time as a tool name.
set -e
cd "$(dirname "$0")/../../.."
export CONTINUUM_CACHE_DIR=${CONTINUUM_CACHE_DIR:-/tmp/continuum-bench-cache}
.venv/bin/python benchmarks/zero_config_http.py --out benchmarks/results/zero-config-http \
  --workload mix --programs 24 --seed 0 --scale 0.05 --time-scale 0.02 --max-turns 8 --jps 2 \
  --rounds 5 --configs vllm,ids,noids,bare
