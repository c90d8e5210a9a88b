#!/usr/bin/env bash
# One-command device check for issue 6: build the CUDA extension, run the GPU tests, time the
# kernels, the decode step and end-to-end throughput, and write a results table naming the card.
#
#   bash benchmarks/device/gpu_check.sh            # full: about 5-7 min on an H100/H200
#   bash benchmarks/device/gpu_check.sh quick      # build + tests + kernel benches: ~3 min
#
# With the device tool (nothing to carry; the repo travels):
#   run(command="bash benchmarks/device/gpu_check.sh", timeout_s=600)
# Results: benchmarks/results/gpu-<card>/ on the machine, and in $OUT (what comes back):
#   summary.md (step status + every table), gpu_check.log, results.tgz (the folder; unpack it
#   at the repo root: tar xzf results.tgz). A step that fails or times out is recorded and the
#   next one still runs; the script's exit status is non-zero if any step failed.
# Each step gets min(its own limit, time left before GPU_CHECK_DEADLINE s, default 570).
set -uo pipefail
cd "$(dirname "$0")/../.."
MODE=${1:-full}
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
export CONTINUUM_OPS_CACHE=${CONTINUUM_OPS_CACHE:-/tmp/continuum_ops_cache}
export MAX_JOBS=${MAX_JOBS:-16}
DEADLINE=${GPU_CHECK_DEADLINE:-570}
T0=$(date +%s)
CARD=$("$PY" -c "import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else 'no-gpu')" 2>/dev/null || echo no-torch)
SAFE=$(echo "$CARD" | tr -c 'A-Za-z0-9._-' '-' | sed 's/-*$//')
RES=benchmarks/results/gpu-$SAFE
mkdir -p "$RES"
LOG=$RES/gpu_check.log
SUMMARY=$RES/summary.md
: > "$LOG"
{
  echo "# GPU check on $CARD ($(date -u '+%Y-%m-%d %H:%M UTC'), mode $MODE)"
  echo
  echo "| step | status | seconds |"
  echo "|---|---|---|"
} > "$SUMMARY"
FAILED=0

step() {   # step NAME LIMIT_S CMD...
  local name=$1 limit=$2; shift 2
  local left=$(( DEADLINE - ($(date +%s) - T0) - 5 ))
  if [ "$left" -lt 20 ]; then
    echo "| $name | SKIPPED (no time left) | 0 |" >> "$SUMMARY"; FAILED=1; return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "=== $name (limit ${limit}s) ===" | tee -a "$LOG"
  local s=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  local dt=$(( $(date +%s) - s ))
  local st=ok
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then st="TIMEOUT"; FAILED=1
  elif [ "$rc" -ne 0 ]; then st="FAILED (rc $rc)"; FAILED=1; fi
  echo "| $name | $st | $dt |" >> "$SUMMARY"
}

step env 30 bash -c "nvidia-smi -L; nvcc --version | tail -1; $PY -c 'import torch; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, torch.cuda.get_device_name(), torch.cuda.get_device_properties(0).multi_processor_count, \"SMs\")'"
if [ "$CARD" = no-gpu ] || [ "$CARD" = no-torch ]; then   # nothing below means anything here
  echo "| (rest) | SKIPPED: no CUDA device ($CARD) | 0 |" >> "$SUMMARY"; cat "$SUMMARY"; exit 1
fi
step build 300 "$PY" -c "
import time, logging; logging.basicConfig(level=logging.INFO)
t = time.time()
from continuum import ops
ok = ops.load(verbose=True)
print('extension built+loaded' if ok else 'BUILD FAILED: ' + ops.unavailable_reason(), f'in {time.time()-t:.1f} s')
raise SystemExit(0 if ok else 1)"
# The GPU tests and the reference-op tests; the CPU emulation tests (test_*_emulated.py, a g++
# build each) check the same kernels' index math and already run in CI: no device time on them.
step tests 240 "$PY" -m pytest -q -p no:cacheprovider -rs tests/ops/test_kernels_gpu.py \
  tests/ops/test_engine_cuda_backend_gpu.py tests/ops/test_ops_reference.py
step bench_decode_attention 120 "$PY" benchmarks/kernels/bench_decode_attention.py --out "$RES"
step bench_prefill 60 "$PY" benchmarks/kernels/bench_prefill.py --out "$RES"
if [ "$MODE" = full ]; then
  step bench_decode_step 200 "$PY" benchmarks/kernels/bench_decode_step.py --out "$RES"
  step bench_e2e 240 "$PY" benchmarks/kernels/bench_e2e.py --out "$RES"
else
  step bench_decode_step 150 "$PY" benchmarks/kernels/bench_decode_step.py --out "$RES" --batches 1,32,128 --no-ref
fi

{
  echo
  echo "total: $(( $(date +%s) - T0 )) s"
  for f in "$RES"/decode_attention.md "$RES"/prefill_gather.md "$RES"/decode_step.md "$RES"/e2e_throughput.md; do
    [ -f "$f" ] && { echo; cat "$f"; }
  done
} >> "$SUMMARY"
cat "$SUMMARY"
if [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ]; then
  cp "$SUMMARY" "$LOG" "$OUT"/
  tar czf "$OUT/results.tgz" "$RES"
fi
exit $FAILED
