"""Geometric means over the budgeted points of continuum+ / vllm (mean JCT, turn-TTFT P99;
per point the mean over seeds 0-2), the worst of each, and the points whose tail exceeds 2x:

    python benchmarks/results/wait-rounds/geomean.py RESULTS.json [...]"""
import json, sys, math
for p in sys.argv[1:]:
    d = json.load(open(p))
    rows = {(r["workload"], r["kv_gb"], r["jps"], r["policy"], r["seed"]): r for r in d["rows"]}
    lj, lt, worst_t, worst_j, n = 0, 0, 0, 0, 0
    over_t = over_j = 0
    pts = sorted({k[:3] for k in rows if k[3] == "continuum+" and k[1]})
    for w, gb, j in pts:
        rj = [rows[(w, gb, j, "continuum+", s)]["jct_mean"] / rows[(w, gb, j, "vllm", s)]["jct_mean"] for s in range(3)]
        rt = [rows[(w, gb, j, "continuum+", s)]["ttft_p99"] / rows[(w, gb, j, "vllm", s)]["ttft_p99"] for s in range(3)]
        mj, mt = sum(rj) / 3, sum(rt) / 3
        lj += math.log(mj); lt += math.log(mt); n += 1
        worst_t = max(worst_t, mt); worst_j = max(worst_j, mj)
        over_t += mt > 2.0
    print(f"{p}: geo mean JCT {math.exp(lj/n):.3f} TTFT99 {math.exp(lt/n):.3f} worst JCT {worst_j:.2f} worst TTFT {worst_t:.2f} points with mean TTFT>2x: {over_t} of {n}")
