"""Ad-hoc probe: ``probe.py`` plus the admission sweeps' workloads (swe-final: 100 programs, seeds
0-1 as there; ASEEDS to change), on a tree with ``rounds.diff`` applied for the patches here:

    SEEDS=0,1,2 .venv/bin/python benchmarks/results/wait-rounds/probe2.py PATCH.py|none workload:gb:load ..."""
import os, sys
from pathlib import Path
ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
for pf in (sys.argv[1].split("+") if sys.argv[1] != "none" else []):
    exec(open(pf).read(), {})
import numpy as np
from matrix import GRID, run_point
import admission_sweep as AS

for pt in sys.argv[2:]:
    w, gb, jps = pt.split(":")
    gb, jps = float(gb), float(jps)
    rs = []
    if w in GRID:
        seeds = [int(s) for s in os.environ.get("SEEDS", "0,1,2").split(",")]
        f = lambda pol, s: run_point((w, gb, jps, pol, s, GRID[w][0], "h200-llama3.1-8b", {}, 0.0))
    else:
        seeds = [int(s) for s in os.environ.get("ASEEDS", "0,1").split(",")]
        f = lambda pol, s: AS._run((w, gb, jps, pol, 100, s, {}, "h200-llama3.1-8b"))
    for s in seeds:
        v, c = f("vllm", s), f("continuum+", s)
        rs.append([c[m] / v[m] for m in ("jct_mean", "jct_p95", "ttft_p99")])
    m = np.mean(rs, axis=0)
    print(f"{pt:22s} jct {m[0]:.2f} p95 {m[1]:.2f} ttft99 {m[2]:.2f}   per seed "
          + " ".join(f"{r[0]:.2f}/{r[2]:.2f}" for r in rs), flush=True)
