#!/bin/sh
# Simulator fidelity on this CPU: profile the engine, then replay the same small trace on the
# real in-process engine and in the simulator with that profile (vllm and continuum).
set -e
cd "$(dirname "$0")/../../.."
export OMP_NUM_THREADS=1
# Own kernel build cache: a build lock left behind elsewhere cannot stall this run.
export CONTINUUM_CACHE_DIR=${CONTINUUM_CACHE_DIR:-/tmp/continuum-bench-cache}
D=benchmarks/results/fidelity-cpu
E="--model random:llama-80m --kv-cache-memory 64MiB --max-num-batched-tokens 256 --max-num-seqs 16"
# Profile with a larger KV (step cost does not depend on the pool size) so that decode batches
# and mixed steps at the trace's contexts fit.
.venv/bin/continuum profile --model random:llama-80m --kv-cache-memory 256MiB --max-num-batched-tokens 256 \
  --name cpu-llama-80m --prefill-new 8,32,64,128,256 --prefill-cached 0,512,1024,2048 \
  --decode-batch 1,2,4,8 --decode-ctx 64,256,1024,2048 --reps 5 --output $D/cpu-llama-80m.json
T=benchmarks/traces/swe-bench-like-cpu-8.jsonl
.venv/bin/continuum bench --target engine $E --workload $T --jps 0.5 --policies vllm,continuum \
  --profile $D/cpu-llama-80m.json --no-progress --out $D/engine
NB=$(.venv/bin/python -c "import json;print(json.load(open('$D/engine/results.json'))['runs'][0]['num_blocks'])")
.venv/bin/continuum bench --target sim $E --num-blocks $NB --workload $T --jps 0.5 --policies vllm,continuum \
  --profile $D/cpu-llama-80m.json --no-progress --out $D/sim
# Heavier point: 10x the tokens (contexts ~1.1k, outputs ~15), 2 JPS, so compute and queueing
# are a real share of JCT (the first point is dominated by tool time).
T=benchmarks/traces/swe-bench-like-cpu-heavy-8.jsonl
.venv/bin/continuum bench --target engine $E --workload $T --jps 2 --policies vllm,continuum \
  --profile $D/cpu-llama-80m.json --no-progress --out $D/engine-heavy
.venv/bin/continuum bench --target sim $E --num-blocks $NB --workload $T --jps 2 --policies vllm,continuum \
  --profile $D/cpu-llama-80m.json --no-progress --out $D/sim-heavy
