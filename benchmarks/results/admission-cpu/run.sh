#!/bin/sh
# continuum+ on the real engine at small scale (this CPU), beside the simulator's prediction
# for the same run: random llama-80m, 16 MiB of KV (113 blocks of 16 tokens), 24 SWE-bench-like
# programs (final-context reading, scale 0.01: contexts grow to ~0.8k tokens, tools x0.5),
# 1 and 2 programs/s, vllm / continuum / continuum+ on the same arrivals. The simulator uses
# the profile measured on this machine by `continuum profile` (benchmarks/results/fidelity-cpu).
# Then the engine again with a 64 MiB host-memory KV tier (CPU offload) beside the 16 MiB pool
# (engine-host/, compare-host.md; engine only: the simulator's offload model is priced for
# GPU<->host links, not this CPU's memcpy). About 13 min in all on the idle 2-core box.
set -e
cd "$(dirname "$0")/../../.."
export OMP_NUM_THREADS=1
export CONTINUUM_CACHE_DIR=${CONTINUUM_CACHE_DIR:-/tmp/continuum-bench-cache}
D=benchmarks/results/admission-cpu
P=benchmarks/results/fidelity-cpu/cpu-llama-80m.json
T=$D/swe-final-cpu-24.jsonl
.venv/bin/continuum bench-trace swe --num-programs 24 --seed 0 --scale 0.01 --tool-time-scale 0.5 \
  --tokens-mode final --output $T
E="--model random:llama-80m --kv-cache-memory 16MiB --max-num-batched-tokens 256 --max-num-seqs 16"
C="--workload $T --jps 1,2 --policies vllm,continuum,continuum+ --profile $P --no-progress"
.venv/bin/continuum bench --target engine $E $C --out $D/engine
NB=$(.venv/bin/python -c "import json;print(json.load(open('$D/engine/results.json'))['runs'][0]['num_blocks'])")
.venv/bin/continuum bench --target sim $E --num-blocks $NB $C --out $D/sim
.venv/bin/continuum bench --target engine $E --host-kv-cache-memory 64MiB $C --out $D/engine-host
.venv/bin/python - <<'PY'
import json
D = "benchmarks/results/admission-cpu"
eng = json.load(open(f"{D}/engine/results.json"))["runs"]
sim = {(r["jps"], r["policy"]): r["summary"] for r in json.load(open(f"{D}/sim/results.json"))["runs"]}
lines = ["| JPS | policy | engine mean JCT s | sim mean JCT s | engine P95 | sim P95 | engine hit rate | sim hit rate | engine preempt | sim preempt |",
         "|---|---|---|---|---|---|---|---|---|---|"]
for r in eng:
    e, s = r["summary"], sim[(r["jps"], r["policy"])]
    lines.append(f"| {r['jps']:g} | {r['policy']} | {e['jct_mean']:.2f} | {s['jct_mean']:.2f} | {e['jct_p95']:.2f} | "
                 f"{s['jct_p95']:.2f} | {e['prefix_hit_rate']:.3f} | {s['prefix_hit_rate']:.3f} | "
                 f"{e['preemptions']} | {s['preemptions']} |")
open(f"{D}/compare.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
dev = {(r["jps"], r["policy"]): r["summary"] for r in eng}
lines = ["| JPS | policy | mean JCT s (no host tier) | mean JCT s (64 MiB host tier) | P95 | P95 (host) | "
         "hit rate | hit rate (host) | host-tier hit tokens | swap-in blocks |", "|" + "---|" * 10]
for r in json.load(open(f"{D}/engine-host/results.json"))["runs"]:
    h, d = r["summary"], dev[(r["jps"], r["policy"])]
    lines.append(f"| {r['jps']:g} | {r['policy']} | {d['jct_mean']:.2f} | {h['jct_mean']:.2f} | {d['jct_p95']:.2f} | "
                 f"{h['jct_p95']:.2f} | {d['prefix_hit_rate']:.3f} | {h['prefix_hit_rate']:.3f} | "
                 f"{h['prefix_cache_host_hits_total']} | {h['swap_in_blocks_total']} |")
open(f"{D}/compare-host.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
