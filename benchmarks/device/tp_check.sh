#!/usr/bin/env bash
# Multi-GPU tensor-parallel check (issue 19): needs a machine with at least 2 CUDA devices.
# Written and syntax-checked (bash -n) on the 2-core CPU machine; never run there.
#
#   bash benchmarks/device/tp_check.sh          # about 4-6 min on 2x H100
#
# With the device tool (a multi-GPU kind; nothing to carry, the repo travels):
#   run(command="bash benchmarks/device/tp_check.sh", timeout_s=600)
# Steps (each recorded in benchmarks/results/tp-gpu-<card>/summary.md, copied to $OUT):
#   1. env: the cards, torch, NCCL version;
#   2. correctness: tests/engine/test_tensor_parallel.py's greedy tests with device auto =
#      cuda: TP=2 over NCCL (ranks on cuda:0 and cuda:1) token-identical to TP=1 and to
#      transformers on the three shapes, every rank's integrity checked after each run.
#      (The dead-rank tests are CPU/gloo tests: NCCL finds a dead peer only through the
#      liveness check before a step or its watchdog's timeout, so they are not run here.)
#   3. overhead: benchmarks/tp_overhead.py --device cuda, bf16: TP=1 vs TP=2 decode step
#      time and tokens/s, and the NCCL all-reduce/all-gather times of a decode step's
#      tensors (the figure the simulator's 0.85 TP efficiency assumes, docs/benchmarks.md).
set -uo pipefail
cd "$(dirname "$0")/../.."
DEADLINE=${TP_CHECK_DEADLINE:-570}
. benchmarks/device/check_lib.sh
NGPU=$("$PY" -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)
check_begin "benchmarks/results/tp-gpu-$SAFE" tp_check.log "Tensor-parallel check on ${NGPU}x $CARD ($(date -u '+%Y-%m-%d %H:%M UTC'))"

step env 30 bash -c "nvidia-smi -L; $PY -c 'import torch; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"nccl\", torch.cuda.nccl.version(), torch.cuda.device_count(), \"GPUs\")'"
if [ "$NGPU" -lt 2 ]; then
  echo "| (rest) | SKIPPED: needs 2 CUDA devices, found $NGPU ($CARD) | 0 |" >> "$SUMMARY"
  cat "$SUMMARY"; exit 1
fi
step correctness 300 "$PY" -m pytest -q -x tests/engine/test_tensor_parallel.py -k tp2_greedy
step overhead 240 "$PY" benchmarks/tp_overhead.py --device cuda --dtype bfloat16 --repeats 2 \
  --seqs 32 --tokens 64 --out "$RES/overhead"
{
  echo
  [ -f "$RES/overhead/report.md" ] && cat "$RES/overhead/report.md"
} >> "$SUMMARY"
cat "$SUMMARY"
if [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ]; then
  cp "$SUMMARY" "$LOG" "$OUT/" 2>/dev/null
  tar czf "$OUT/results.tgz" "$RES" 2>/dev/null
fi
exit $FAILED
