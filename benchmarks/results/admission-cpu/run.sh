#!/bin/sh
# continuum+ on the real engine at small scale (this CPU), beside the simulator's prediction
# for the same run: random llama-80m, 16 MiB of KV (113 blocks of 16 tokens), 24 SWE-bench-like
# programs (final-context reading, scale 0.01: contexts grow to ~0.8k tokens, tools x0.5),
# 1 and 2 programs/s, vllm / continuum / continuum+ on the same arrivals. The simulator uses
# the profile measured on this machine by `continuum profile` (benchmarks/results/fidelity-cpu).
# Then the engine again with a 64 MiB host-memory KV tier (CPU offload) beside the 16 MiB pool
# (engine-host/, compare-host.md; engine only: the simulator's offload model is priced for
# GPU<->host links, not this CPU's memcpy). About 13 min in all on the idle 2-core box.
# OUT (a directory) and PROFILE (this host's `continuum profile`) rerun it elsewhere, e.g.
# OUT=benchmarks/results/admission-cpu/avx512 PROFILE=benchmarks/results/matrix-cpu/rounds-ab/cpu-llama-80m.json
set -e
cd "$(dirname "$0")/../../.."
export OMP_NUM_THREADS=1
export CONTINUUM_CACHE_DIR=${CONTINUUM_CACHE_DIR:-/tmp/continuum-bench-cache}
D=${OUT:-benchmarks/results/admission-cpu}
P=${PROFILE:-benchmarks/results/fidelity-cpu/cpu-llama-80m.json}
mkdir -p $D
T=$D/swe-final-cpu-24.jsonl
.venv/bin/continuum bench-trace swe --num-programs 24 --seed 0 --scale 0.01 --tool-time-scale 0.5 \
  --tokens-mode final --output $T
E="--model random:llama-80m --kv-cache-memory 16MiB --max-num-batched-tokens 256 --max-num-seqs 16"
C="--workload $T --jps 1,2 --policies vllm,continuum,continuum+ --profile $P --no-progress"
.venv/bin/continuum bench --target engine $E $C --out $D/engine
NB=$(.venv/bin/python -c "import json;print(json.load(open('$D/engine/results.json'))['runs'][0]['num_blocks'])")
.venv/bin/continuum bench --target sim $E --num-blocks $NB $C --out $D/sim
.venv/bin/continuum bench --target engine $E --host-kv-cache-memory 64MiB $C --out $D/engine-host
.venv/bin/python - "$D" <<'PY'
import json, sys
D = sys.argv[1]
runs = lambda name: {(r["jps"], r["policy"]): r["summary"] for r in json.load(open(f"{D}/{name}/results.json"))["runs"]}


def table(path, a, b, la, lb, extra=()):
    """One row per (load, policy): mean JCT, P95 and hit rate of runs a and b side by side."""
    head = ["JPS", "policy"] + [f"{m} ({l})" for m in ("mean JCT s", "P95 s", "hit rate") for l in (la, lb)]
    lines = ["| " + " | ".join(head + [k for k, _ in extra]) + " |", "|" + "---|" * (len(head) + len(extra))]
    for (jps, pol), x in a.items():
        y = b[(jps, pol)]
        cells = [f"{jps:g}", pol] + [f"{v:.2f}" for v in (x["jct_mean"], y["jct_mean"], x["jct_p95"], y["jct_p95"])]
        cells += [f"{x['prefix_hit_rate']:.3f}", f"{y['prefix_hit_rate']:.3f}"] + [str(f(x, y)) for _, f in extra]
        lines.append("| " + " | ".join(cells) + " |")
    open(f"{D}/{path}", "w").write("\n".join(lines) + "\n")
    print("\n".join(lines))


eng = runs("engine")
table("compare.md", eng, runs("sim"), "engine", "sim",
      [("preemptions (engine / sim)", lambda x, y: f"{x['preemptions']} / {y['preemptions']}")])
table("compare-host.md", eng, runs("engine-host"), "no host tier", "64 MiB host tier",
      [("host-tier hit tokens", lambda x, y: y["prefix_cache_host_hits_total"]),
       ("swap-in blocks", lambda x, y: y["swap_in_blocks_total"])])
PY
