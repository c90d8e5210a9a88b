#!/bin/bash
# Recording overhead: the same streaming load (8 clients, 128-token prompts, 32 forced output
# tokens, no program ids: one trace line per request) against `continuum serve` without and with
# --record-trace, 8 alternating pairs of 20 s runs, llama-80m bf16, one intra-op thread; plus the
# recorder's own CPU per request measured in-process. Loopback only. See benchmarks/record_overhead.py.
cd "$(dirname "$0")/../../.." && .venv/bin/python benchmarks/record_overhead.py \
    --repeats 8 --duration 20 --threads 1 --out benchmarks/results/record
