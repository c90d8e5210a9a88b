# Shared by the device check scripts (sourced after `cd` to the repository root): the
# environment, the card's name, the results folder with its summary table, and `step`, which
# runs one step under min(its own limit, the time left before DEADLINE s) and records it.
# The caller sets DEADLINE first; a step that fails or times out sets FAILED=1 and the next
# step still runs.
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
export CONTINUUM_OPS_CACHE=${CONTINUUM_OPS_CACHE:-/tmp/continuum_ops_cache}
T0=$(date +%s)
CARD=$("$PY" -c "import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else 'no-gpu')" 2>/dev/null || echo no-torch)
SAFE=$(echo "$CARD" | tr -c 'A-Za-z0-9._-' '-' | sed 's/-*$//')
FAILED=0

check_begin() {   # check_begin RESULTS_DIR LOG_NAME TITLE: sets RES, LOG, SUMMARY
  RES=$1
  mkdir -p "$RES"
  LOG=$RES/$2
  SUMMARY=$RES/summary.md
  : > "$LOG"
  {
    echo "# $3"
    echo
    echo "| step | status | seconds |"
    echo "|---|---|---|"
  } > "$SUMMARY"
}

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
