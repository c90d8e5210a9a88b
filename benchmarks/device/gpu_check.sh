#!/usr/bin/env bash
# One-command device check for issue 6: build the CUDA extension, run the GPU tests, time the
# kernels, the decode step and end-to-end throughput, and write a results table naming the card.
#
#   bash benchmarks/device/gpu_check.sh            # full: about 5-7 min on an H100/H200 (before
#                                                  # the varlen kernel; not timed since)
#   bash benchmarks/device/gpu_check.sh quick      # build + tests + kernel benches: ~3-4 min
# The step limits add up to more than the deadline: steps run in order of what a first device
# run must learn (build, correctness, the varlen kernel, then the timings), and a step that
# meets the deadline is recorded as timed out while what ran before it stands.
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
export MAX_JOBS=${MAX_JOBS:-16}
DEADLINE=${GPU_CHECK_DEADLINE:-570}
. benchmarks/device/check_lib.sh
check_begin "benchmarks/results/gpu-$SAFE" gpu_check.log "GPU check on $CARD ($(date -u '+%Y-%m-%d %H:%M UTC'), mode $MODE)"

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
  tests/ops/test_engine_cuda_backend_gpu.py tests/ops/test_ops_reference.py tests/engine/test_cache_engine_swap.py
# The varlen kernel on whole mixed steps: checked against the fp32 reference first (the step
# fails on a mismatch), then timed against the old gather + SDPA path. First of the benches: it is
# the kernel no device has run yet, and the steps after it may meet the deadline.
step bench_varlen 120 "$PY" benchmarks/kernels/bench_varlen.py --out "$RES"
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
  for f in "$RES"/decode_attention.md "$RES"/prefill_gather.md "$RES"/varlen.md "$RES"/decode_step.md "$RES"/e2e_throughput.md; do
    [ -f "$f" ] && { echo; cat "$f"; }
  done
} >> "$SUMMARY"
cat "$SUMMARY"
if [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ]; then
  cp "$SUMMARY" "$LOG" "$OUT"/
  tar czf "$OUT/results.tgz" "$RES"
fi
exit $FAILED
