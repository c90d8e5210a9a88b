#!/bin/sh
# A/B of the default policy on the real CPU engine: continuum+ of this tree (B) and of commit
# BASE (A, imported from a `git worktree` ahead of the editable install), beside vllm, on the
# same traces, profile and host, per seed one after the other (so a drift of the host's speed
# touches all three alike), and the simulator's prediction of B on the measured profile. The
# setup is run.sh's (24 programs, random llama-80m, 227 blocks). Writes
# OUT/<workload>-s<seed>-{engine,base,sim}/ and OUT/ab-<workload>.md (ab.py: per-seed ratios,
# mean and 95% CI). Knobs: BASE (commit), OUT, SEEDS (default 0 1 2 3 4 5), JPS, WORKLOAD (mix), PROFILE
# (reuse a measured profile; default: measure one first). Run it on an idle machine.
set -e
cd "$(dirname "$0")/../../.."
: "${BASE:?BASE=<commit> to compare against}"
D=${OUT:?OUT=<dir>}
W=${WORKLOAD:-mix}
OLD=/tmp/continuum-$(git rev-parse --short "$BASE")
[ -d "$OLD" ] || git worktree add -f "$OLD" "$BASE"
export OMP_NUM_THREADS=1 CONTINUUM_CACHE_DIR=${CONTINUUM_CACHE_DIR:-/tmp/continuum-bench-cache}
mkdir -p "$D"
P=${PROFILE:-$D/cpu-llama-80m.json}
E="--model random:llama-80m --num-blocks 227 --max-num-batched-tokens 256 --max-num-seqs 16"
[ -n "$PROFILE" ] || .venv/bin/continuum profile --model random:llama-80m --kv-cache-memory 256MiB --max-num-batched-tokens 256 \
  --name cpu-llama-80m --prefill-new 8,32,64,128,256 --prefill-cached 0,512,1024,2048 \
  --decode-batch 1,2,4,8,16 --decode-ctx 64,256,1024,2048 --reps 5 --output "$P"
for S in ${SEEDS:-0 1 2 3 4 5}; do
  T=$D/$W-cpu-24-s$S.jsonl
  .venv/bin/continuum bench-trace "$W" --num-programs 24 --seed "$S" --scale 0.05 --tool-time-scale 0.02 \
    --max-turns 8 --output "$T"
  C="$E --workload $T --jps ${JPS:-1,2,4} --profile $P --seed $S --no-progress"
  .venv/bin/continuum bench --target engine $C --policies vllm,continuum+ --out "$D/$W-s$S-engine"
  .venv/bin/python - bench --target engine $C --policies continuum+ --out "$D/$W-s$S-base" <<PY
import sys
sys.meta_path = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
sys.path.insert(0, "$OLD")
import continuum
assert continuum.__file__.startswith("$OLD"), continuum.__file__
from continuum.cli import main
sys.argv[0] = "continuum"
sys.exit(main())
PY
  .venv/bin/continuum bench --target sim $C --policies vllm,continuum+ --out "$D/$W-s$S-sim"
done
.venv/bin/python benchmarks/results/matrix-cpu/ab.py "$D" "$W" ${SEEDS:-0 1 2 3 4 5}
