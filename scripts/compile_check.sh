#!/usr/bin/env bash
# Compile-check every CUDA kernel file in csrc/ with nvcc alone (no torch, no GPU needed):
# SASS for Hopper (sm_90a) plus plain compute_90 PTX, which any later GPU can JIT ('a' PTX
# cannot). Objects go to a temp dir and are thrown away. Warnings are errors for our code.
#
#   scripts/compile_check.sh            # every csrc/*.cu
#   COMPILE_CHECK_BINDING=1 scripts/compile_check.sh   # also syntax-check the torch binding
#                                       # against the installed torch headers (~10 s)
# Exit 0 and "compile check OK" when everything compiles; 0 with a SKIP line if nvcc is absent
# and COMPILE_CHECK_REQUIRED is unset (set it to make a missing nvcc a failure).
set -euo pipefail
cd "$(dirname "$0")/.."
NVCC=${NVCC:-nvcc}
if ! command -v "$NVCC" >/dev/null 2>&1; then
  if [ -n "${COMPILE_CHECK_REQUIRED:-}" ]; then echo "compile check FAILED: no nvcc" >&2; exit 1; fi
  echo "compile check SKIP: nvcc not found"; exit 0
fi
OUTDIR=$(mktemp -d)
trap 'rm -rf "$OUTDIR"' EXIT
# The -D flags are the ones torch's extension builder adds: compile under the same rules.
FLAGS=(-std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -gencode=arch=compute_90,code=compute_90
       -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__
       -D__CUDA_NO_BFLOAT16_CONVERSIONS__ -D__CUDA_NO_HALF2_OPERATORS__
       -Xcompiler=-Wall -Werror=all-warnings --resource-usage)
start=$(date +%s)
pids=()
for f in csrc/*.cu; do
  name=$(basename "$f" .cu)
  # One nvcc per file, in parallel (2 at most: CI machines have 2 cores).
  ( nice "$NVCC" "${FLAGS[@]}" -c "$f" -o "$OUTDIR/$name.o" >"$OUTDIR/$name.log" 2>&1 \
      && echo "  ok   $f" || { echo "  FAIL $f"; cat "$OUTDIR/$name.log"; exit 1; } ) &
  pids+=($!)
  if [ ${#pids[@]} -ge "${COMPILE_JOBS:-2}" ]; then wait "${pids[0]}" || fail=1; pids=("${pids[@]:1}"); fi
done
for p in "${pids[@]}"; do wait "$p" || fail=1; done
# Spills to local memory make the decode kernel much slower: report any, fail on none.
if grep -h "spill" "$OUTDIR"/*.log 2>/dev/null | grep -v " 0 bytes spill stores, 0 bytes spill loads" | grep -q .; then
  echo "  warning: register spills:"; grep -h "spill" "$OUTDIR"/*.log | grep -v " 0 bytes spill stores" | sort | uniq -c | head
fi
# One line per file: how many kernels, their register range, the largest stack frame.
for log in "$OUTDIR"/*.log; do
  awk -v f="$(basename "$log" .log)" '/Used [0-9]+ registers/ { for (i = 1; i <= NF; i++) if ($i == "Used") r = $(i + 1);
        n++; if (min == "" || r < min) min = r; if (r > max) max = r }
      /bytes stack frame/ { if ($1 + 0 > st) st = $1 + 0 }
      END { if (n) printf "  regs %-22s %2d kernels (sm_90a), %d-%d registers, max stack frame %d bytes\n", f, n, min, max, st }' "$log"
done
if [ -n "${COMPILE_CHECK_BINDING:-}" ]; then
  # Host-only C++: g++ syntax check against the installed torch's headers. A CPU torch lacks
  # one generated CUDA header; a stub stands in (it only defines a build macro).
  PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
  TORCH_INC=$("$PY" -c "import torch.utils.cpp_extension as c; print(' '.join('-I'+p for p in c.include_paths()))")
  PYINC=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
  CUDA_INC=$(dirname "$(readlink -f "$(command -v "$NVCC")")")/../include
  mkdir -p "$OUTDIR/stub/c10/cuda/impl"
  printf '#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n' > "$OUTDIR/stub/c10/cuda/impl/cuda_cmake_macros.h"
  nice g++ -std=c++20 -fsyntax-only -Wall -Wno-unknown-pragmas $TORCH_INC -idirafter "$OUTDIR/stub" \
      -I"$PYINC" -I"$CUDA_INC" -I/usr/local/cuda/include -Icsrc csrc/torch_bindings.cpp \
    && echo "  ok   csrc/torch_bindings.cpp (syntax)" || fail=1
fi
echo "compile check took $(( $(date +%s) - start )) s"
if [ -n "${fail:-}" ]; then echo "compile check FAILED"; exit 1; fi
echo "compile check OK"
