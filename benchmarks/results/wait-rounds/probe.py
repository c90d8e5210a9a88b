"""Ad-hoc probe: continuum+ with patch files against vllm at some points, per seed, the way
``benchmarks/matrix.py`` simulates the matrix's workloads (same generators, arrivals, budgets;
seeds 0-2, SEEDS to change) and ``benchmarks/admission_sweep.py`` the sweeps' others (swe-final:
100 programs, seeds 0-1 as there, ASEEDS to change).

    K=4 SEEDS=0,1,2 .venv/bin/python benchmarks/results/wait-rounds/probe.py PATCH.py[+PATCH2.py]|none workload:gb:load ...

Prints mean JCT, P95 JCT and turn-TTFT P99 as ratios to vllm's (mean over the seeds, then per
seed JCT/TTFT P99), from ``matrix.run_point`` / ``admission_sweep._run``. The patches that use
``round_seconds`` or the program table's sums need ``rounds.diff`` applied first."""
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
for pf in (sys.argv[1].split("+") if sys.argv[1] != "none" else []):
    exec(open(pf).read(), {})

import numpy as np  # noqa: E402
import admission_sweep  # noqa: E402
from matrix import GRID, run_point  # noqa: E402

PROFILE = "h200-llama3.1-8b"
METRICS = ("jct_mean", "jct_p95", "ttft_p99")


def runner(w: str, gb: float, jps: float):
    """(seeds, run(policy, seed) -> row) for a matrix workload or an admission-sweep one."""
    if w in GRID:
        seeds = os.environ.get("SEEDS", "0,1,2")
        return seeds, lambda pol, s: run_point((w, gb, jps, pol, s, GRID[w][0], PROFILE, {}, 0.0))
    seeds = os.environ.get("ASEEDS", "0,1")
    return seeds, lambda pol, s: admission_sweep._run((w, gb, jps, pol, 100, s, {}, PROFILE))


for pt in sys.argv[2:]:
    w, gb, jps = pt.split(":")
    seeds, run = runner(w, float(gb), float(jps))
    rs = []
    for s in (int(x) for x in seeds.split(",")):
        v, c = run("vllm", s), run("continuum+", s)
        rs.append([c[m] / v[m] for m in METRICS])
    m = np.mean(rs, axis=0)
    print(f"{pt:22s} jct {m[0]:.2f} p95 {m[1]:.2f} ttft99 {m[2]:.2f}   per seed "
          + " ".join(f"{r[0]:.2f}/{r[2]:.2f}" for r in rs), flush=True)
