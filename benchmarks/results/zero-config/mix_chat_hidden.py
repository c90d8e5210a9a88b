"""Mix and chat at the matrix's budgets, seed 0: vllm, continuum+ with ids, continuum+ with ids hidden
(the recogniser assigns them). Run from the repository root:

    PYTHONPATH=$PWD python benchmarks/results/zero-config/mix_chat_hidden.py
"""
import sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import zero_config_sim as z
from multiprocessing import Pool
prof = str(Path(__file__).resolve().parents[2] / "profiles" / "h200-llama3.1-8b.json")
jobs = []
for wl, n, gb, jps in [("mix", 200, 20, 0.3), ("mix", 200, 20, 1.0), ("mix", 200, 60, 0.5), ("chat", 300, 20, 8)]:
    jobs += [(wl, n, gb, jps, "vllm", False, 0, prof), (wl, n, gb, jps, "continuum+", False, 0, prof), (wl, n, gb, jps, "continuum+", True, 0, prof)]
with Pool(2) as p:
    rows = p.map(z.run, jobs)
for r in rows:
    print(r["workload"], r["kv_gb"], r["jps"], r["policy"], "ids" if r["ids"] else "hidden", round(r["jct_mean"], 1), r.get("recognition"))
