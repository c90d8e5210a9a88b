"""Drift-robust TTLs: does the default policy follow a tool whose latency shifts 4x?

    python benchmarks/drift.py --out benchmarks/results/drift            # the whole benchmark
    python benchmarks/drift.py --seeds 0,1 --programs 200 --stationary-turns 100000   # smaller

Two measurements (issue 18, item 2):

1. **JCT after a shift.** A seeded generator's trace (``--workload``, default coding-agent, at
   ``--kv-gb`` and ``--jps``; each seed draws its own trace and Poisson arrivals) is replayed in
   the simulator with the H200 Llama-3.1-8B profile under the default policy, three ways:
   - *drift*: the programs arriving at or after the median arrival (the second half) see tool
     ``--tool``'s durations multiplied by ``factor`` (4, and separately 1/4);
   - *oracle*: every program sees the new durations (the policy is given the new
     distribution from the start: its history never holds the old one);
   - *stale* (ablation): the drift trace with the change-point test switched off in this
     process, i.e. the predictor as it was before drift detection.
   The figure of merit is the mean JCT of the second-half programs, drift / oracle, per seed
   (same arrivals and the same second-half durations), as mean and 95% CI over seeds; the goal
   is within 5%. The second half is where the two runs differ only by what the predictor
   learnt from the first (and by the first half's leftover load at the change, small against
   a half of the run).
2. **False alarms.** Long stationary sequences of tool durations, drawn per tool from the
   generators' own duration distributions (``generators.py``: the SWE-like and BFCL-like
   mixtures with rare slow calls; ``workloads.py``: coding-agent, short-agent and chat's human
   think times), fed to a ``DurationPredictor`` tool by tool in their drawn order; every
   detection is a false alarm. Goal: < 1 per 10,000 turns. Plus detections in the
   stationary simulator runs.

Prints a table and writes ``results.json`` (command, per-seed rows, aggregates) under ``--out``.
Parallel over ``--jobs`` processes.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.matrix import mean_ci, programs_for  # noqa: E402

POLICY = "continuum+"
VARIANTS = ("drift", "oracle", "stale", "stationary")


def shifted_trace(programs, arrivals: list[float], tool: str, factor: float, t_shift: float):
    """Copies of ``programs`` in which tool ``tool`` takes ``factor`` times as long in every
    program arriving at or after ``t_shift`` (``t_shift`` = -inf: in all of them)."""
    from continuum.bench.trace import ProgramTrace, Turn
    out = []
    for p, a in zip(programs, arrivals):
        scale = a >= t_shift
        out.append(ProgramTrace(p.program_id, [
            Turn(t.input_tokens, t.output_tokens, t.tool,
                 t.tool_duration * factor if scale and t.tool == tool else t.tool_duration, t.last)
            for t in p.turns], p.arrival_time, p.source))
    return out


def run_one(job: tuple) -> dict:
    """(workload, n, kv_gb, jps, tool, factor, variant, seed, profile) -> one row."""
    workload, n, gb, jps, tool, factor, variant, seed, profile = job
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from continuum.bench.replay import assign_arrivals
    from continuum.sim.cost_model import CostModel
    from continuum.sim.profile import kv_bytes_per_token, load_profile
    from continuum.sim.simulator import SimConfig, simulate
    import continuum.kv_ttl.drift as drift
    # Ablation "stale": the change-point test never fires (restored for the next job of this
    # worker process).
    real = drift.__dict__.setdefault("_real_shifted", drift.shifted)
    drift.shifted = (lambda history_sorted, window: False) if variant == "stale" else real
    prof = load_profile(profile)
    base = programs_for(workload, n, seed)
    arrivals = assign_arrivals(base, jps, seed)
    t_shift = sorted(arrivals)[n // 2]
    if variant == "stationary":
        programs = base
    else:
        programs = shifted_trace(base, arrivals, tool, factor,
                                 -math.inf if variant == "oracle" else t_shift)
    blocks = int(gb * 1e9 // (kv_bytes_per_token(prof) * 16))
    t0 = time.perf_counter()
    r = simulate(programs, arrivals, CostModel(prof),
                 SimConfig(policy=POLICY, num_blocks=blocks, seed=seed))
    second = [p for p, a in zip(r.programs, arrivals) if a >= t_shift]
    done = [p for p in second if p.finish is not None]
    return {"workload": workload, "kv_gb": gb, "jps": jps, "tool": tool, "factor": factor,
            "variant": variant, "seed": seed, "programs": n,
            "jct_mean_second_half": sum(p.jct for p in done) / max(len(done), 1),
            "completed_second_half": len(done), "second_half": len(second),
            "jct_mean_all": sum(p.jct for p in r.programs if p.finish is not None)
            / max(sum(p.finish is not None for p in r.programs), 1),
            "drift_detections": r.stats.get("tool_drift_detections_total"),
            "pins_retimed": r.stats.get("pins_retimed_after_drift_total"),
            "pins_made": r.stats.get("pins_made_total"), "pins_hit": r.stats.get("pins_hit_total"),
            "tool_durations_seen": r.stats.get("tool_durations_seen_total"),
            "wall_s": round(time.perf_counter() - t0, 2)}


# -- false alarms on stationary duration sequences -------------------------------------------
def _stationary_sources():
    """{name: draw(rng, n) -> list of (tool, duration)}: the generators' duration laws."""
    import numpy as np

    from continuum.bench import generators as g
    from continuum.bench import workloads as w

    def method(spec):
        stretch, tscale = g.tool_calibration(spec)
        names = list(spec.tools)
        p = np.array([spec.tools[k].weight for k in names])
        p = p / p.sum()

        def draw(rng, n):
            idx = rng.choice(len(names), size=n, p=p)
            slow, fz, sz = rng.random(n), rng.standard_normal(n), rng.standard_normal(n)
            out = []
            for i, s, f, z in zip(idx, slow, fz, sz):
                t = spec.tools[names[i]]
                d = (t.slow_median * stretch * math.exp(t.slow_sigma * z) if s < t.p_slow
                     else t.fast_median * math.exp(t.fast_sigma * f))
                out.append((names[i], d * tscale))
            return out
        return draw

    def mixture(mix, clip):
        return lambda rng, n: w._tool_mixture(rng, mix, n, clip)

    def think(rng, n):
        return [(w.HUMAN, float(x)) for x in rng.lognormal(math.log(120.0), 1.06, size=n)]

    return {"swe-bench-like": method(g.SWE_BENCH), "bfcl-like": method(g.BFCL),
            "coding-agent": mixture(w.CODING_TOOLS, 21.0),
            "short-agent": mixture({"call": (1.0, 0.25, 0.6)}, 5.0), "chat-think": think}


def false_alarms(job: tuple) -> dict:
    """(source, turns, seed) -> detections on ``turns`` stationary durations."""
    import numpy as np

    from continuum.kv_ttl.predictor import DurationPredictor
    name, turns, seed = job
    rng = np.random.default_rng([seed, 0xD21F7])
    p = DurationPredictor()
    hits = sum(p.observe(tool, d) for tool, d in _stationary_sources()[name](rng, turns))
    return {"source": name, "seed": seed, "turns": turns, "detections": hits,
            "per_tool": p.drift_counts()}


# -- aggregation and report ------------------------------------------------------------------
def aggregate(rows: list[dict]) -> list[dict]:
    by: dict[tuple, dict[str, dict[int, dict]]] = {}
    for r in rows:
        by.setdefault((r["tool"], r["factor"]), {}).setdefault(r["variant"], {})[r["seed"]] = r
    out = []
    for (tool, factor), v in sorted(by.items()):
        oracle = v.get("oracle", {})
        a = {"tool": tool, "factor": factor}
        for name in ("drift", "stale"):
            runs = v.get(name, {})
            pairs = [runs[s]["jct_mean_second_half"] / oracle[s]["jct_mean_second_half"]
                     for s in sorted(runs) if s in oracle]
            a[f"{name}_vs_oracle"] = mean_ci(pairs) if pairs else None
            a[f"{name}_detections"] = sum(runs[s]["drift_detections"] or 0 for s in runs)
        for name in ("drift", "oracle", "stale"):
            runs = v.get(name, {})
            a[f"{name}_jct"] = (sum(r["jct_mean_second_half"] for r in runs.values()) / len(runs)
                                if runs else None)
        a["oracle_detections"] = sum(r["drift_detections"] or 0 for r in oracle.values())
        a["pins_retimed"] = sum(r["pins_retimed"] or 0 for r in v.get("drift", {}).values())
        a["within_5pct"] = (a["drift_vs_oracle"] is not None
                            and abs(a["drift_vs_oracle"][0] - 1) <= 0.05
                            and a["drift_vs_oracle"][2] <= 1.05)
        out.append(a)
    return out


def _ci(c) -> str:
    return "-" if c is None else f"{c[0]:.3f} [{c[1]:.3f}, {c[2]:.3f}]"


def report(aggs: list[dict], alarms: list[dict], stationary: list[dict]) -> str:
    lines = ["| tool x factor | JCT 2nd half: drift / oracle / stale (s) | drift / oracle | "
             "stale / oracle | detections: drift, oracle, stale | pins re-timed | within 5% |",
             "|---|---|---|---|---|---|---|"]
    for a in aggs:
        lines.append(f"| {a['tool']} x{a['factor']:g} | {a['drift_jct']:.1f} / {a['oracle_jct']:.1f} / "
                     f"{a['stale_jct']:.1f} | {_ci(a['drift_vs_oracle'])} | {_ci(a['stale_vs_oracle'])} | "
                     f"{a['drift_detections']}, {a['oracle_detections']}, {a['stale_detections']} | "
                     f"{a['pins_retimed']} | {'yes' if a['within_5pct'] else 'NO'} |")
    lines += ["", "| stationary source | turns | false alarms | per 10,000 turns |", "|---|---|---|---|"]
    by: dict[str, list] = {}
    for r in alarms:
        by.setdefault(r["source"], []).append(r)
    tot_t = tot_d = 0
    for name, rs in by.items():
        t, d = sum(r["turns"] for r in rs), sum(r["detections"] for r in rs)
        tot_t, tot_d = tot_t + t, tot_d + d
        lines.append(f"| {name} | {t:,} | {d} | {1e4 * d / t:.4f} |")
    st_t = sum(r["tool_durations_seen"] or 0 for r in stationary)
    st_d = sum(r["drift_detections"] or 0 for r in stationary)
    lines.append(f"| simulator runs, no shift | {st_t:,} | {st_d} | {1e4 * st_d / max(st_t, 1):.4f} |")
    tot_t, tot_d = tot_t + st_t, tot_d + st_d
    lines.append(f"| **all** | {tot_t:,} | {tot_d} | {1e4 * tot_d / max(tot_t, 1):.4f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workload", default="coding-agent")
    ap.add_argument("--kv-gb", type=float, default=40.0)
    ap.add_argument("--jps", type=float, default=0.2)
    ap.add_argument("--programs", type=int, default=400)
    ap.add_argument("--tools", default="bash,read", help="tools to shift (one experiment each)")
    ap.add_argument("--factors", default="4,0.25")
    ap.add_argument("--seeds", default="0,1,2,3,4")
    ap.add_argument("--stationary-turns", type=int, default=1_000_000,
                    help="stationary durations per source (split over the seeds)")
    ap.add_argument("--profile", default="h200-llama3.1-8b")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    tools = args.tools.split(",")
    factors = [float(f) for f in args.factors.split(",")]
    jobs = [(args.workload, args.programs, args.kv_gb, args.jps, tool, f, v, s, args.profile)
            for tool in tools for f in factors for v in ("drift", "oracle", "stale") for s in seeds]
    jobs += [(args.workload, args.programs, args.kv_gb, args.jps, tools[0], 1.0, "stationary", s,
              args.profile) for s in seeds]
    per_seed = max(args.stationary_turns // len(seeds), 1)
    alarm_jobs = [(name, per_seed, s) for name in _stationary_sources() for s in seeds]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as ex:
        rows = list(ex.map(run_one, jobs))
        alarms = list(ex.map(false_alarms, alarm_jobs))
    sim_rows = [r for r in rows if r["variant"] != "stationary"]
    stationary = [r for r in rows if r["variant"] == "stationary"]
    aggs = aggregate(sim_rows)
    text = report(aggs, alarms, stationary)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        cmd = "python benchmarks/drift.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
        (out / "results.json").write_text(json.dumps(
            {"command": cmd, "policy": POLICY, "profile": args.profile, "workload": args.workload,
             "kv_gb": args.kv_gb, "jps": args.jps, "programs": args.programs, "seeds": seeds,
             "wall_seconds": round(time.perf_counter() - t0, 1), "aggregates": aggs,
             "rows": rows, "false_alarms": alarms}, indent=1))
        (out / "report.md").write_text(f"`{cmd}`\n\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
