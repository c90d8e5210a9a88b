"""Ad-hoc probe: continuum+ with patch files against vllm at some of the matrix's points, per
seed, the way ``benchmarks/matrix.py`` simulates them (same generators, arrivals, budgets).

    K=4 SEEDS=0,1,2 .venv/bin/python benchmarks/results/wait-rounds/probe.py PATCH.py[+PATCH2.py]|none workload:gb:load ...

Prints mean JCT, P95 JCT and turn-TTFT P99 as ratios to vllm's (mean over the seeds, then per
seed JCT/TTFT P99)."""
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
for pf in (sys.argv[1].split("+") if sys.argv[1] != "none" else []):
    exec(open(pf).read(), {})

import numpy as np  # noqa: E402
from matrix import GRID, programs_for  # noqa: E402
from continuum.bench.replay import assign_arrivals  # noqa: E402
from continuum.config import SchedulerConfig  # noqa: E402
from continuum.sim.cost_model import CostModel  # noqa: E402
from continuum.sim.profile import kv_bytes_per_token, load_profile  # noqa: E402
from continuum.sim.simulator import SimConfig, simulate  # noqa: E402

prof = load_profile("h200-llama3.1-8b")
seeds = [int(s) for s in os.environ.get("SEEDS", "0,1,2").split(",")]


def run(w, gb, jps, policy, seed):
    programs = programs_for(w, GRID[w][0], seed)
    arrivals = assign_arrivals(programs, jps, seed)
    blocks = int(gb * 1e9 // (kv_bytes_per_token(prof) * 16))
    r = simulate(programs, arrivals, CostModel(prof),
                 SimConfig(policy=policy, num_blocks=blocks, seed=seed, scheduler=SchedulerConfig.from_kwargs()))
    done = [p for p in r.programs if p.finish is not None]
    jct = [p.jct for p in done]
    return [float(np.mean(jct)), float(np.percentile(jct, 95)),
            float(np.percentile([t.ttft for p in done for t in p.turns], 99))]


for pt in sys.argv[2:]:
    w, gb, jps = pt.split(":")
    rs = []
    for s in seeds:
        v, c = run(w, float(gb), float(jps), "vllm", s), run(w, float(gb), float(jps), "continuum+", s)
        rs.append([c[i] / v[i] for i in range(3)])
    m = np.mean(rs, axis=0)
    print(f"{pt:22s} jct {m[0]:.2f} p95 {m[1]:.2f} ttft99 {m[2]:.2f}   per seed "
          + " ".join(f"{r[0]:.2f}/{r[2]:.2f}" for r in rs), flush=True)
