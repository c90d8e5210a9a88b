#!/bin/sh
# Run-to-run spread on the engine where vllm stayed below its cliff in ab.sh's runs: the same
# trace, load and profile again, REPS times (default 2), vllm and continuum+ (this tree), one
# invocation each. Writes repeat/s<seed>-j<load>-r<rep>/ and prints mean JCT / turn-TTFT P99.
set -e
cd "$(dirname "$0")/../../../.."
D=benchmarks/results/matrix-cpu/rounds-ab
export OMP_NUM_THREADS=1 CONTINUUM_CACHE_DIR=${CONTINUUM_CACHE_DIR:-/tmp/continuum-bench-cache}
for P in ${POINTS:-0:1 3:1 3:2}; do
  S=${P%:*}; J=${P#*:}
  for R in $(seq 1 ${REPS:-2}); do
    .venv/bin/continuum bench --target engine --model random:llama-80m --num-blocks 227 --max-num-batched-tokens 256 \
      --max-num-seqs 16 --workload $D/mix-cpu-24-s$S.jsonl --jps $J --profile $D/cpu-llama-80m.json --seed $S \
      --no-progress --policies vllm,continuum+ --out $D/repeat/s$S-j$J-r$R > /dev/null
  done
done
.venv/bin/python - "$D" <<'PY'
import json, sys
from pathlib import Path
d = Path(sys.argv[1])
for f in sorted((d / "repeat").glob("*/results.json")):
    runs = {r["policy"]: r["summary"] for r in json.loads(f.read_text())["runs"]}
    v, c = runs["vllm"], runs["continuum+"]
    print(f"{f.parent.name}: vllm {v['jct_mean']:.2f} s (hit {v['prefix_hit_rate']:.2f}), continuum+ "
          f"{c['jct_mean']:.2f} s: {c['jct_mean'] / v['jct_mean']:.2f}x mean JCT, "
          f"{c['ttft_p99'] / v['ttft_p99']:.2f}x turn-TTFT P99")
PY
