"""Ad-hoc probe: continuum+ with patch files against vllm at some of the matrix's points, per
seed, the way ``benchmarks/matrix.py`` simulates them (same generators, arrivals, budgets).

    K=4 SEEDS=0,1,2 .venv/bin/python benchmarks/results/wait-rounds/probe.py PATCH.py[+PATCH2.py]|none workload:gb:load ...

Prints mean JCT, P95 JCT and turn-TTFT P99 as ratios to vllm's (mean over the seeds, then per
seed JCT/TTFT P99), from ``matrix.run_point``."""
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
for pf in (sys.argv[1].split("+") if sys.argv[1] != "none" else []):
    exec(open(pf).read(), {})

import numpy as np  # noqa: E402
from matrix import GRID, run_point  # noqa: E402

seeds = [int(s) for s in os.environ.get("SEEDS", "0,1,2").split(",")]
METRICS = ("jct_mean", "jct_p95", "ttft_p99")


def run(w, gb, jps, policy, seed):
    """``matrix.run_point``'s metrics, without the scheduler knobs or a host tier."""
    row = run_point((w, gb, jps, policy, seed, GRID[w][0], "h200-llama3.1-8b", {}, 0.0))
    return [row[m] for m in METRICS]


for pt in sys.argv[2:]:
    w, gb, jps = pt.split(":")
    rs = []
    for s in seeds:
        v, c = run(w, float(gb), float(jps), "vllm", s), run(w, float(gb), float(jps), "continuum+", s)
        rs.append([c[i] / v[i] for i in range(3)])
    m = np.mean(rs, axis=0)
    print(f"{pt:22s} jct {m[0]:.2f} p95 {m[1]:.2f} ttft99 {m[2]:.2f}   per seed "
          + " ".join(f"{r[0]:.2f}/{r[2]:.2f}" for r in rs), flush=True)
