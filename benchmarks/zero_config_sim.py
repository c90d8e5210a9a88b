"""Zero-config programs in the simulator: how much of the mean-JCT gain over vllm explicit
program ids give is kept when the replayer hides the ids and the program recogniser assigns
them from the token prefixes (``SimConfig.hide_program_ids``; the tool name stays, standing
for the tool call a real server parses from the output).

    python benchmarks/zero_config_sim.py --out benchmarks/results/zero-config

Agent workloads of the matrix (benchmarks/matrix.py), H200 Llama-3.1-8B profile, each at its
smaller KV budget and two loads past vllm's cliff; per point: vllm, then each policy with ids
and without. ``gain_kept`` = (vllm - hidden) / (vllm - explicit) mean JCT; the recognition
score of the hidden run (right turns, merges) is from each turn's ``program_id_used``.
Writes ``sim.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from collections import defaultdict
from multiprocessing import Pool
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

# workload -> (programs, KV GB, loads): the matrix's smaller budget and its two highest loads
POINTS = {"swe": (100, 10, [1.0, 1.4]), "bfcl": (100, 20, [0.18, 0.24]),
          "coding-agent": (100, 40, [0.4, 0.5]), "short-agent": (100, 4, [4, 6])}


def recognition(records) -> dict:
    from continuum.bench.zero_config import TurnResult, score
    return score([TurnResult(p.program_id, t.turn, t.program_id_used, True, None, t.prompt_tokens,
                             t.cached_tokens) for p in records for t in p.turns])


def run(job: tuple) -> dict:
    workload, n, gb, jps, policy, hide, seed, profile = job
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from continuum.bench.generators import generate
    from continuum.bench.metrics import summarize
    from continuum.bench.replay import assign_arrivals
    from continuum.bench.workloads import FAMILIES
    from continuum.sim.cost_model import CostModel
    from continuum.sim.profile import kv_bytes_per_token, load_profile
    from continuum.sim.simulator import SimConfig, simulate

    prof = load_profile(profile)
    programs = FAMILIES[workload](n, seed) if workload in FAMILIES else generate(workload, n, seed=seed)
    arrivals = assign_arrivals(programs, jps, seed)
    blocks = int(gb * 1e9 // (kv_bytes_per_token(prof) * 16))
    t0 = time.perf_counter()
    r = simulate(programs, arrivals, CostModel(prof),
                 SimConfig(policy=policy, num_blocks=blocks, seed=seed, hide_program_ids=hide))
    s = summarize(r.programs, r.stats)
    row = {"workload": workload, "kv_gb": gb, "jps": jps, "policy": policy, "ids": not hide,
           "seed": seed, "jct_mean": s.get("jct_mean"), "jct_p95": s.get("jct_p95"),
           "completed": s.get("completed"), "pins_made": r.stats.get("pins_made_total"),
           "wall_s": round(time.perf_counter() - t0, 1)}
    if hide:
        rec = recognition(r.programs)
        row["recognition"] = {k: rec[k] for k in ("turns", "accuracy", "merges", "splits")}
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="benchmarks/results/zero-config")
    p.add_argument("--policies", default="continuum,continuum+")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workloads", default=",".join(POINTS))
    p.add_argument("--profile", default=str(HERE / "profiles" / "h200-llama3.1-8b.json"))
    p.add_argument("--jobs", type=int, default=2)
    a = p.parse_args()
    jobs = []
    for wl in a.workloads.split(","):
        n, gb, loads = POINTS[wl]
        for jps in loads:
            jobs.append((wl, n, gb, jps, "vllm", False, a.seed, a.profile))
            for pol in a.policies.split(","):
                jobs += [(wl, n, gb, jps, pol, False, a.seed, a.profile),
                         (wl, n, gb, jps, pol, True, a.seed, a.profile)]
    with Pool(a.jobs) as pool:
        rows = pool.map(run, jobs)
    by = defaultdict(dict)
    for r in rows:
        by[(r["workload"], r["jps"])][(r["policy"], r["ids"])] = r
    summary = []
    for (wl, jps), runs in by.items():
        vllm = runs[("vllm", True)]["jct_mean"]
        for pol in a.policies.split(","):
            ex, hid = runs[(pol, True)]["jct_mean"], runs[(pol, False)]["jct_mean"]
            gain = vllm - ex
            summary.append({"workload": wl, "jps": jps, "policy": pol, "vllm_jct": vllm,
                            "ids_jct": ex, "no_ids_jct": hid,
                            "gain_kept": (vllm - hid) / gain if abs(gain) > 1e-9 else None,
                            "recognition": runs[(pol, False)]["recognition"]})
            print(f"{wl} @ {jps}: {pol} vllm {vllm:.1f} s, ids {ex:.1f} s, no ids {hid:.1f} s, "
                  f"gain kept {summary[-1]['gain_kept']}, recognition {summary[-1]['recognition']}",
                  flush=True)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "sim.json").write_text(json.dumps({
        "command": "python " + " ".join(shlex.quote(x) for x in sys.argv),
        "summary": summary, "runs": rows}, indent=2) + "\n")
    print(f"wrote {out / 'sim.json'}")


if __name__ == "__main__":
    main()
