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
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
export CONTINUUM_OPS_CACHE=${CONTINUUM_OPS_CACHE:-/tmp/continuum_ops_cache}
DEADLINE=${TP_CHECK_DEADLINE:-570}
T0=$(date +%s)
NGPU=$("$PY" -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)
CARD=$("$PY" -c "import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else 'no-gpu')" 2>/dev/null || echo no-torch)
SAFE=$(echo "$CARD" | tr -c 'A-Za-z0-9._-' '-' | sed 's/-*$//')
RES=benchmarks/results/tp-gpu-$SAFE
mkdir -p "$RES"
LOG=$RES/tp_check.log
SUMMARY=$RES/summary.md
: > "$LOG"
{
  echo "# Tensor-parallel check on ${NGPU}x $CARD ($(date -u '+%Y-%m-%d %H:%M UTC'))"
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
