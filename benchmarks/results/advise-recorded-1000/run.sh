#!/bin/bash
# `continuum advise` on a *recorded* 1,000-program trace (issue 18). Machine: the project's
# shared 2-core CPU box.
#
# 1. Record: `continuum serve random:tiny --record-trace` (CPU, random weights, byte tokenizer,
#    default policy continuum+) while `continuum bench --target http://...` replays the
#    generated SWE-bench-like workload (1,000 programs, seed 0; tokens x0.05 and tool times
#    x0.02 so that it runs in minutes; Poisson arrivals at 2 programs/s, concurrency from the
#    arrivals) with --client-ids tool: no program ids, so the recording's programs are the ones
#    the server recognised (its meta says "inferred").
# 2. Scale back: the recording's token counts x20 and tool times x50 (continuum.bench.workloads.
#    rescale), so that it stands for the full-size workload the matrix simulates; the H200
#    Llama-3.1-8B profile is the served model's (a random CPU model has no H200 profile).
# 3. Advise on it with the same settings as benchmarks/results/advise-swe-1000 (the generated
#    trace): 20 GB of KV, vllm as the current setting, Poisson arrivals at 0.7 programs/s, the
#    full default grid; wall time by /usr/bin/time.
# The recording of the run here is kept as recorded.jsonl (1.3 MB); this script regenerates
# one under /tmp (same seed, programs and token counts; the measured tool gaps vary with the
# box). Measured 2026-12-06 14:10-14:28 UTC: replay 514 s, advise 6 min 53 s.
set -e
cd "$(dirname "$0")/../../.."
export CONTINUUM_CACHE_DIR=${CONTINUUM_CACHE_DIR:-/tmp/continuum-bench-cache}
D=benchmarks/results/advise-recorded-1000
REC=${REC:-/tmp/advise-recorded-1000/recorded.jsonl}
mkdir -p "$(dirname "$REC")"
rm -f "$REC" "$REC".*
PORT=$(.venv/bin/python -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
OMP_NUM_THREADS=1 .venv/bin/continuum serve random:tiny --host 127.0.0.1 --port "$PORT" \
  --kv-cache-memory 64MiB --record-trace "$REC" --log-level warning > "$(dirname "$REC")/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
until curl -sf "http://127.0.0.1:$PORT/health" > /dev/null; do
  kill -0 $SERVER || { echo "server exited"; exit 1; }; sleep 1
done
/usr/bin/time -f "replay wall %e s" .venv/bin/continuum bench --target "http://127.0.0.1:$PORT" \
  --workload swe --num-programs 1000 --seed 0 --scale 0.05 --tool-time-scale 0.02 --jps 2 \
  --client-ids tool --no-progress --out "$D/replay" 2>&1 | tail -20
curl -s "http://127.0.0.1:$PORT/metrics" | grep -E "^continuum_(programs_inferred|turns_attached|program_forks|record)" \
  > "$D/server-counters.txt" || true
kill -TERM $SERVER; wait $SERVER || true          # a clean shutdown writes every open program
trap - EXIT
ls -l "$REC"*
.venv/bin/python - "$REC" "$D" <<'PY'
import json, sys
from continuum.bench.trace import load_trace, save_trace, trace_stats
from continuum.bench.workloads import rescale
rec, d = sys.argv[1], sys.argv[2]
progs = load_trace(rec)
full = rescale(progs, tokens=20, time=50)
save_trace(full, rec.replace(".jsonl", "-x1.jsonl"), header=f"{rec} with tokens x20, tool times x50")
json.dump({"recorded": trace_stats(progs), "scaled_back": trace_stats(full)}, open(f"{d}/trace-stats.json", "w"), indent=2)
print(len(progs), "programs,", sum(len(p.turns) for p in progs), "turns recorded")
PY
/usr/bin/time -v .venv/bin/continuum advise "${REC%.jsonl}-x1.jsonl" --profile h200-llama3.1-8b --jps 0.7 \
  --kv-gb 20 --current-policy vllm --no-progress --out "$D/advise" 2> "$D/advise-time.txt" | tee "$D/advise.txt"
grep -E "Elapsed|Maximum resident" "$D/advise-time.txt"
