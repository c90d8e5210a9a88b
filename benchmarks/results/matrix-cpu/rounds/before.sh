#!/bin/sh
# The same engine runs as run.sh's (this folder's traces and profile), continuum+ alone, on the
# code before the bound in rounds (df14bd8, the default of the previous session), to set the
# new default's runs beside the old one's on the same host and day. The tree is checked out
# with `git worktree` and imported ahead of the editable install.
set -e
cd "$(dirname "$0")/../../../.."
OLD=${OLD:-/tmp/continuum-df14bd8}
[ -d "$OLD" ] || git worktree add -f "$OLD" df14bd8
export OMP_NUM_THREADS=1 CONTINUUM_CACHE_DIR=${CONTINUUM_CACHE_DIR:-/tmp/continuum-bench-cache}
D=benchmarks/results/matrix-cpu/rounds
for S in ${SEEDS:-0 1 2}; do
  .venv/bin/python - bench --target engine --model random:llama-80m --num-blocks 227 --max-num-batched-tokens 256 \
    --max-num-seqs 16 --workload $D/mix-cpu-24-s$S.jsonl --jps 1,2,4 --policies continuum+ \
    --profile $D/cpu-llama-80m.json --seed $S --no-progress --out $D/before-s$S-engine <<PY
import sys
sys.meta_path = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
sys.path.insert(0, "$OLD")
import continuum.scheduler.admission as a
assert a.__file__.startswith("$OLD") and not hasattr(a, "PEAK_ROUNDS"), a.__file__
from continuum.cli import main
sys.argv[0] = "continuum"
sys.exit(main())
PY
done
