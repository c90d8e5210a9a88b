"""Ad-hoc (2026-12-08): a memory bound on the sustainable load from Little's law. Each program of
seed 0 of the matrix's agent workloads, replayed alone (0.01 programs/s, unbounded KV), holds its
context from each turn's send to the next one's (kept resident) or only while its turn computes
(freed in tool calls); a budget of C tokens sustains at most C / E[tokens x seconds] programs/s.

    .venv/bin/python benchmarks/results/door-evidence/memory_bound.py
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
from matrix import programs_for, GRID
from continuum.bench.replay import assign_arrivals
from continuum.config import SchedulerConfig
from continuum.sim.cost_model import CostModel
from continuum.sim.profile import kv_bytes_per_token, load_profile
from continuum.sim.simulator import SimConfig, simulate
import numpy as np
prof = load_profile("h200-llama3.1-8b")
for w, gbs in (("bfcl", (20, 30)), ("short-agent", (4, 8)), ("swe", (10, 20)), ("coding-agent", (40,))):
    programs = programs_for(w, GRID[w][0], 0)
    arr = assign_arrivals(programs, 0.01, 0)
    blocks = sum(p.final_context // 16 + 2 for p in programs) + 1024
    r = simulate(programs, arr, CostModel(prof), SimConfig(policy="vllm", num_blocks=blocks, seed=0, scheduler=SchedulerConfig()))
    ms, ms_busy = [], []
    for p in r.programs:
        ts = sorted(p.turns, key=lambda t: t.turn)
        m = mb = 0.0
        for i, t in enumerate(ts):
            ctx = t.prompt_tokens + t.output_tokens
            end = ts[i + 1].submit if i + 1 < len(ts) else t.finish
            m += ctx * (end - t.submit)
            mb += ctx * (t.finish - t.submit)   # resident only while its turn computes
        ms.append(m); ms_busy.append(mb)
    for gb in gbs:
        C = gb * 1e9 / kv_bytes_per_token(prof)
        print(f"{w} {gb} GB: C={C:.0f} tok; mean memory-time per program {np.mean(ms):.0f} tok*s (computing only {np.mean(ms_busy):.0f}); "
              f"lambda bound kept {C/np.mean(ms):.3f}/s, freed in tools {C/np.mean(ms_busy):.3f}/s")
