#!/usr/bin/env bash
# Scheduler cost before/after the SHA-256 prefix-cache keys (branch h13-hash): BASE's tree
# (default e593728, main before the change) exported to a temp dir with this tree's benchmark
# script copied in, against this tree; alternating runs, 5 rounds each, so that load from
# other processes falls on both sides alike. Writes before-after/{before,after}N.json and
# prints the per-row medians. Then results.json / table.txt are the last "after" run.
# Other comparisons: BASE=<commit> OUT=<folder under this one> ROUNDS=<n> POLICIES=<a,b,...>
# (with OUT set, results.json / table.txt are left alone).
set -euo pipefail
cd "$(dirname "$0")/../../.."
PY=$(realpath "${PY:-.venv/bin/python}")
out=benchmarks/results/scheduler-overhead
base=$(mktemp -d)
trap 'rm -rf "$base"' EXIT
git archive "${BASE:-e593728}" | tar -x -C "$base"
cp benchmarks/scheduler_overhead.py "$base/benchmarks/"
dir="$out/${OUT:-before-after}"
rounds=${ROUNDS:-5}
pol=()
[[ -n "${POLICIES:-}" ]] && pol=(--policies "$POLICIES")
mkdir -p "$dir"
for r in $(seq 1 "$rounds"); do
  echo "round $r $(date -u +%FT%TZ) load $(cut -d' ' -f1-3 /proc/loadavg)"
  (cd "$base" && "$PY" benchmarks/scheduler_overhead.py "${pol[@]}" --json "$OLDPWD/$dir/before$r.json" >/dev/null)
  "$PY" benchmarks/scheduler_overhead.py "${pol[@]}" --json "$dir/after$r.json" > "$dir/table.txt"
done
if [[ -z "${OUT:-}" ]]; then
  mv "$dir/table.txt" "$out/table.txt"
  cp "$dir/after$rounds.json" "$out/results.json"
fi
"$PY" - "$dir" "$rounds" <<'PYEOF'
import json, statistics as st, sys
d, n = sys.argv[1], int(sys.argv[2])
runs = {k: [json.load(open(f"{d}/{k}{r}.json")) for r in range(1, n + 1)] for k in ("before", "after")}
print("| policy | offload | mean ms before | after | p50 ms before | after | p99 ms before | after |")
print("|---|---|---|---|---|---|---|---|")
for i, row in enumerate(runs["before"][0]["steps"]):
    med = lambda k, m: st.median(x["steps"][i][m] for x in runs[k])
    cells = " | ".join(f"{med('before', m):.3f} | {med('after', m):.3f}" for m in ("mean_ms", "p50_ms", "p99_ms"))
    print(f"| {row['policy']} | {'yes' if row['host_blocks'] else 'no'} | {cells} |")
for m in ("hash_block_ns", "update_block_hashes_ns"):
    print(m, {k: round(st.median(x["block_hashing"][m] for x in v)) for k, v in runs.items()})
PYEOF
