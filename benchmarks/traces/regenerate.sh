#!/bin/sh
# Regenerates the bundled traces (deterministic: same files on every machine).
set -e
cd "$(dirname "$0")/../.."
C=.venv/bin/continuum
$C bench-trace swe  --num-programs 100 --seed 0 --output benchmarks/traces/swe-bench-like-100.jsonl
$C bench-trace bfcl --num-programs 100 --seed 0 --output benchmarks/traces/bfcl-like-100.jsonl
$C bench-trace swe  --num-programs 8 --seed 0 --scale 0.02 --tool-time-scale 0.5 --output benchmarks/traces/swe-bench-like-cpu-8.jsonl
$C bench-trace swe  --num-programs 100 --seed 0 --tokens-mode final --output benchmarks/traces/swe-bench-like-final-100.jsonl
$C bench-trace swe  --num-programs 8 --seed 1 --scale 0.1 --tool-time-scale 0.5 --output benchmarks/traces/swe-bench-like-cpu-heavy-8.jsonl
# The real SWE-agent trajectories stay in ../shared (their licence is theirs): convert them on demand:
# $C bench-trace swe-smith --input ../shared/traces/swe-smith-5.json --output /tmp/swe-smith-5.jsonl
