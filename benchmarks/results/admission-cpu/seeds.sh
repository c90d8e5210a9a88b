#!/bin/sh
# The simulator's side of run.sh over more seeds and loads: 24 SWE-bench-like programs (run.sh's
# trace settings, seed S), 113 KV blocks, vllm and continuum+ at 0.5 / 1 / 1.5 / 2 programs/s, on
# PROFILE (a `continuum profile` of the host). Prints per seed and load: vllm's mean JCT and hit
# rate, continuum+'s mean JCT / turn-TTFT P99 as multiples of vllm's, and its bound admissions.
#   PROFILE=benchmarks/results/matrix-cpu/rounds-ab/cpu-llama-80m.json sh benchmarks/results/admission-cpu/seeds.sh
set -e
cd "$(dirname "$0")/../../.."
P=${PROFILE:-benchmarks/results/fidelity-cpu/cpu-llama-80m.json}
W=${TMPDIR:-/tmp}/admission-cpu-seeds
mkdir -p $W
for S in ${SEEDS:-0 1 2 3 4}; do
  .venv/bin/continuum bench-trace swe --num-programs 24 --seed $S --scale 0.01 --tool-time-scale 0.5 \
    --tokens-mode final --output $W/swe-$S.jsonl > /dev/null
  OMP_NUM_THREADS=1 .venv/bin/continuum bench --target sim --model random:llama-80m --num-blocks 113 \
    --max-num-batched-tokens 256 --max-num-seqs 16 --workload $W/swe-$S.jsonl --jps 0.5,1,1.5,2 \
    --policies vllm,continuum+ --profile $P --seed $S --no-progress --out $W/s$S > /dev/null
  .venv/bin/python - $W/s$S/results.json $S <<'PY'
import json, sys
R = {(r["jps"], r["policy"]): r for r in json.load(open(sys.argv[1]))["runs"]}
cells = []
for j in sorted({j for j, _ in R}):
    v, c = R[(j, "vllm")]["summary"], R[(j, "continuum+")]
    cells.append(f"@{j:g} vllm {v['jct_mean']:.1f} s hit {v['prefix_hit_rate']:.2f}, continuum+ "
                 f"{c['summary']['jct_mean'] / v['jct_mean']:.2f} / {c['summary']['ttft_p99'] / v['ttft_p99']:.2f}"
                 f" ({c['stats']['admission_timeouts_total']} on the bound)")
print(f"seed {sys.argv[2]}: " + "; ".join(cells))
PY
done
