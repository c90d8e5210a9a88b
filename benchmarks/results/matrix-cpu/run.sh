#!/bin/sh
# The scheduling matrix's small-scale counterpart on the real CPU engine, beside the simulator's
# prediction of the same runs: chat-like and mix (agents + chat) workloads, 24 programs each
# (tokens x0.05, tool and think times x0.02, at most 8 turns), random llama-80m with 227 KV
# blocks of 16 tokens (32 MiB in bf16; --num-blocks keeps that pool on a CPU without fast bf16,
# where the engine picks float32), 1, 2 and 4 programs/s, vllm / continuum / continuum+ on the
# same arrivals, seeds 0 1 2 (SEEDS to change: each seed draws its own trace, arrivals and
# random weights). The simulator uses a profile of this engine measured first by `continuum
# profile` (cpu-llama-80m.json here). Run it on an idle machine: the engine runs in real time.
# Writes <workload>-s<seed>-{engine,sim}/, compare.md (per-seed ratios to vllm: mean and 95% CI).
# Other points: OUT (a directory), JPS, WORKLOADS, POLICIES; PROFILE reuses a measured profile
# (e.g. OUT=benchmarks/results/matrix-cpu/below-cliff JPS=0.25 WORKLOADS=mix
# PROFILE=benchmarks/results/matrix-cpu/cpu-llama-80m.json).
set -e
cd "$(dirname "$0")/../../.."
export OMP_NUM_THREADS=1
export CONTINUUM_CACHE_DIR=${CONTINUUM_CACHE_DIR:-/tmp/continuum-bench-cache}
D=${OUT:-benchmarks/results/matrix-cpu}
mkdir -p $D
P=${PROFILE:-$D/cpu-llama-80m.json}
E="--model random:llama-80m --num-blocks 227 --max-num-batched-tokens 256 --max-num-seqs 16"
[ -n "$PROFILE" ] || .venv/bin/continuum profile --model random:llama-80m --kv-cache-memory 256MiB --max-num-batched-tokens 256 \
  --name cpu-llama-80m --prefill-new 8,32,64,128,256 --prefill-cached 0,512,1024,2048 \
  --decode-batch 1,2,4,8,16 --decode-ctx 64,256,1024,2048 --reps 5 --output $P
for S in ${SEEDS:-0 1 2}; do
  for W in ${WORKLOADS:-chat mix}; do
    T=$D/$W-cpu-24-s$S.jsonl
    .venv/bin/continuum bench-trace $W --num-programs 24 --seed $S --scale 0.05 --tool-time-scale 0.02 \
      --max-turns 8 --output $T
    C="--workload $T --jps ${JPS:-1,2,4} --policies ${POLICIES:-vllm,continuum,continuum+} --profile $P --seed $S --no-progress"
    .venv/bin/continuum bench --target engine $E $C --out $D/$W-s$S-engine
    .venv/bin/continuum bench --target sim $E $C --out $D/$W-s$S-sim
  done
done
.venv/bin/python benchmarks/results/matrix-cpu/compare.py $D ${SEEDS:-0 1 2}
