#!/bin/sh
# Ad-hoc probe: the CPU mix of matrix-cpu/ab.sh in the simulator (that run's traces and measured
# profile, AB to change), continuum+ with an optional patch file against vllm at 0.5-4 programs/s.
# Usage: sh simcpu.sh PATCH.py|none SEED... Prints per load: mean JCT / turn-TTFT P99 x vllm, h = steps
# the door held a newcomer.
P=$1; shift
cd "$(dirname "$0")/../../.."
for S in "$@"; do
  D=${AB:-benchmarks/results/matrix-cpu/rounds-ab}; T=$D/mix-cpu-24-s$S.jsonl
  [ -f $T ] || .venv/bin/continuum bench-trace mix --num-programs 24 --seed $S --scale 0.05 --tool-time-scale 0.02 --max-turns 8 --output $T >/dev/null 2>&1
  OMP_NUM_THREADS=1 .venv/bin/python - bench --target sim --model random:llama-80m --num-blocks 227 --max-num-batched-tokens 256 --max-num-seqs 16 --workload $T --jps 0.5,1,1.5,2,4 --policies vllm,continuum+ --profile $D/cpu-llama-80m.json --seed $S --no-progress --out /tmp/door-evidence-$S > /dev/null 2>&1 <<PY
import sys
if "$P" != "none":
    exec(open("$P").read(), {})
from continuum.cli import main
sys.argv[0] = "continuum"
main()
PY
  python3 - <<PY
import json
d=json.load(open('/tmp/door-evidence-$S/results.json'))
R={(r['jps'],r['policy']):r for r in d['runs']}
out=[]
for j in sorted({k[0] for k in R}):
    v=R[(j,'vllm')]['summary']; c=R[(j,'continuum+')]['summary']; st=R[(j,'continuum+')]['stats']
    out.append(f"@{j:g} {c['jct_mean']/v['jct_mean']:.2f}/{c['ttft_p99']/v['ttft_p99']:.2f} h{st.get('admission_held_steps_total')}")
print("seed $S", "  ".join(out))
PY
done
