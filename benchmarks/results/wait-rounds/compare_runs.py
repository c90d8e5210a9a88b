"""Per point, continuum+ x vllm (mean over seeds 0-2) in two matrix results.json files:

    python benchmarks/results/wait-rounds/compare_runs.py OLD/results.json NEW/results.json

<< marks a point where NEW is worse (mean JCT +0.02 or turn-TTFT P99 x1.1), >> better."""
import json, sys, statistics as st
def load(p):
    d = json.load(open(p)); rows = d["runs"] if "runs" in d else d["rows"] if "rows" in d else d
    return rows
def idx(rows):
    out = {}
    for r in rows:
        out[(r["workload"], r["kv_gb"], r["jps"], r["policy"], r["seed"])] = r
    return out
a, b = idx(load(sys.argv[1])), idx(load(sys.argv[2]))
pts = sorted({k[:3] for k in a if k[3] == "continuum+" and k[1]})
print(f"{'point':28s} {'jct old':>8s} {'jct new':>8s} {'p95 o':>6s} {'p95 n':>6s} {'ttft old':>9s} {'ttft new':>9s}")
for w, gb, j in pts:
    r = {m: [[], []] for m in ("jct_mean", "jct_p95", "ttft_p99")}
    for s in range(3):
        v = a.get((w, gb, j, "vllm", s))
        for i, src in enumerate((a, b)):
            c = src.get((w, gb, j, "continuum+", s))
            if v and c:
                for m in r:
                    r[m][i].append(c[m] / v[m])
    if not r["jct_mean"][1]:
        continue
    f = lambda x: st.mean(x) if x else float("nan")
    o, n = f(r["jct_mean"][0]), f(r["jct_mean"][1])
    to, tn = f(r["ttft_p99"][0]), f(r["ttft_p99"][1])
    flag = " <<" if (n > o + 0.02 or tn > to * 1.1) else (" >>" if (n < o - 0.02 or tn < to / 1.1) else "")
    print(f"{w:14s} {gb:5g} @ {j:<6g} {o:8.2f} {n:8.2f} {f(r['jct_p95'][0]):6.2f} {f(r['jct_p95'][1]):6.2f} {to:9.2f} {tn:9.2f}{flag}")
