#!/bin/sh
# The scheduling matrix's small-scale counterpart on the real CPU engine, beside the simulator's
# prediction of the same runs: chat-like and mix (agents + chat) workloads, 24 programs each
# (tokens x0.05, tool and think times x0.02, at most 8 turns), random llama-80m with 32 MiB of
# KV (226 blocks of 16 tokens), 1 and 2 programs/s, vllm / continuum / continuum+ on the same
# arrivals. The simulator uses the profile measured on this machine by `continuum profile`
# (benchmarks/results/fidelity-cpu). Run it on an idle machine: the engine runs in real time.
set -e
cd "$(dirname "$0")/../../.."
export OMP_NUM_THREADS=1
export CONTINUUM_CACHE_DIR=${CONTINUUM_CACHE_DIR:-/tmp/continuum-bench-cache}
D=benchmarks/results/matrix-cpu
P=benchmarks/results/fidelity-cpu/cpu-llama-80m.json
E="--model random:llama-80m --kv-cache-memory 32MiB --max-num-batched-tokens 256 --max-num-seqs 16"
for W in chat mix; do
  T=$D/$W-cpu-24.jsonl
  .venv/bin/continuum bench-trace $W --num-programs 24 --seed 0 --scale 0.05 --tool-time-scale 0.02 \
    --max-turns 8 --output $T
  C="--workload $T --jps 1,2 --policies vllm,continuum,continuum+ --profile $P --no-progress"
  .venv/bin/continuum bench --target engine $E $C --out $D/$W-engine
  NB=$(.venv/bin/python -c "import json;print(json.load(open('$D/$W-engine/results.json'))['runs'][0]['num_blocks'])")
  .venv/bin/continuum bench --target sim $E --num-blocks $NB $C --out $D/$W-sim
done
.venv/bin/python - <<'PY'
import json
D = "benchmarks/results/matrix-cpu"
lines = ["| workload | JPS | policy | mean JCT s (engine / sim) | x vllm (engine / sim) | turn-TTFT P99 s (engine / sim) "
         "| x vllm (engine / sim) | hit rate (engine / sim) |", "|" + "---|" * 8]
for w in ("chat", "mix"):
    runs = {name: {(r["jps"], r["policy"]): r["summary"] for r in json.load(open(f"{D}/{w}-{name}/results.json"))["runs"]}
            for name in ("engine", "sim")}
    for (jps, pol), e in runs["engine"].items():
        s = runs["sim"][(jps, pol)]
        ev, sv = runs["engine"][(jps, "vllm")], runs["sim"][(jps, "vllm")]
        lines.append(f"| {w} | {jps:g} | {pol} | {e['jct_mean']:.2f} / {s['jct_mean']:.2f} | "
                     f"{e['jct_mean'] / ev['jct_mean']:.2f} / {s['jct_mean'] / sv['jct_mean']:.2f} | "
                     f"{e['ttft_p99']:.2f} / {s['ttft_p99']:.2f} | {e['ttft_p99'] / ev['ttft_p99']:.2f} / "
                     f"{s['ttft_p99'] / sv['ttft_p99']:.2f} | {e['prefix_hit_rate']:.3f} / {s['prefix_hit_rate']:.3f} |")
open(f"{D}/compare.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
