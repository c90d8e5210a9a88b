"""Load sweeps in the simulator: where does each policy fall off the cliff? (issue: continuum+)

    python benchmarks/admission_sweep.py --out benchmarks/results/admission   # the full set
    python benchmarks/admission_sweep.py --workload swe-final --kv-gb 30 --loads 0.03,0.05
    python benchmarks/admission_sweep.py --reuse benchmarks/results/admission/results.json \
        --fresh continuum+ --out DIR                  # rerun only what changed

For each workload and KV budget, every policy replays the same Poisson arrivals at each load
(H200 Llama-3.1-8B profile); a reference run with unbounded KV (vllm) shows the compute
ceiling no admission rule can pass. The *sustainable load* of a policy is the highest load
before its mean JCT first exceeds ``--limit`` (2) x the mean ideal JCT, interpolated linearly
between the two grid points around the crossing (the grid's last load if it never crosses).

Workloads (seeded generators, METHOD section 4): ``swe-final`` (SWE-bench-like, tokens per
program read as the final context: contexts grow to ~70k tokens), ``swe`` (the same, read as
the sum over turns), ``bfcl`` (BFCL-like). Writes ``results.json`` (command, every run's
summary, sustainable loads), ``report.md`` and per (workload, budget) plots of mean JCT /
ideal and prefix hit rate vs load.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reuse import earlier_runs  # noqa: E402

DEFAULT_GRID = {
    # workload: (KV budgets in GB, loads in JPS)
    "swe-final": ([30, 45], [0.03, 0.035, 0.04, 0.045, 0.05, 0.055, 0.06, 0.065, 0.07, 0.08, 0.09]),
    "swe": ([10, 20], [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0, 1.2, 1.4]),
    "bfcl": ([20, 30], [0.06, 0.08, 0.1, 0.12, 0.14, 0.16, 0.18, 0.2, 0.22]),
}
POLICIES = ["vllm", "continuum", "continuum+"]
UNBOUNDED = "unbounded KV (vllm)"
KEYS = ["jct_mean", "ideal_mean", "jct_p95", "jct_over_ideal_mean", "ttft_p50", "ttft_p99",
        "prefix_hit_rate", "preemptions", "completed", "pins_made_total", "pins_hit_total"]


def _programs(workload: str, n: int, seed: int):
    from continuum.bench.generators import generate
    if workload == "swe-final":
        return generate("swe", n, seed=seed, tokens_mode="final")
    return generate(workload, n, seed=seed)


def _run(job: tuple) -> dict:
    workload, gb, jps, policy, n, seed, sched_kw, profile = job
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from continuum.bench.metrics import summarize
    from continuum.bench.replay import assign_arrivals
    from continuum.config import SchedulerConfig
    from continuum.sim.cost_model import CostModel
    from continuum.sim.profile import kv_bytes_per_token, load_profile
    from continuum.sim.simulator import SimConfig, simulate

    prof = load_profile(profile)
    cost = CostModel(prof)
    programs = _programs(workload, n, seed)
    arrivals = assign_arrivals(programs, jps, seed)
    # Unbounded: more blocks than all contexts together can use.
    blocks = int(gb * 1e9 // (kv_bytes_per_token(prof) * 16)) if gb else 2_000_000
    pol = "vllm" if policy == UNBOUNDED else policy
    t0 = time.perf_counter()
    r = simulate(programs, arrivals, cost, SimConfig(policy=pol, num_blocks=blocks, seed=seed,
                                                       scheduler=SchedulerConfig.from_kwargs(**sched_kw)))
    s = summarize(r.programs, r.stats)
    row = {"workload": workload, "kv_gb": gb, "jps": jps, "policy": policy, "seed": seed,
           **{k: s.get(k) for k in KEYS}, "num_blocks": blocks,
           "door_held_steps": r.stats.get("admission_held_steps_total"),
           "wall_seconds": round(time.perf_counter() - t0, 2)}
    row["mean_jct_over_mean_ideal"] = row["jct_mean"] / row["ideal_mean"]
    return row


def sustainable_load(points: list[tuple[float, float]], limit: float) -> float | None:
    """Highest load before mean JCT / ideal first exceeds ``limit`` (linear interpolation);
    None if even the lowest load exceeds it."""
    points = sorted(points)
    prev = None
    for jps, ratio in points:
        if ratio > limit:
            if prev is None:
                return None
            (j0, r0) = prev
            return j0 + (jps - j0) * (limit - r0) / (ratio - r0)
        prev = (jps, ratio)
    return points[-1][0] if points else None


def mean_over_seeds(rows: list[dict]) -> list[dict]:
    """One row per (workload, budget, load, policy): numeric fields averaged over seeds."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["workload"], r["kv_gb"], r["jps"], r["policy"]), []).append(r)
    out = []
    for (wl, gb, jps, pol), rs in sorted(groups.items()):
        m = {"workload": wl, "kv_gb": gb, "jps": jps, "policy": pol, "seeds": len(rs)}
        for k in ["mean_jct_over_mean_ideal", "prefix_hit_rate", "preemptions", *KEYS]:
            vals = [r[k] for r in rs if r.get(k) is not None]
            m[k] = sum(vals) / len(vals) if vals else None
        out.append(m)
    return out


def _plots(rows: list[dict], out: Path, limit: float) -> list[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    files = []
    for wl, gb in sorted({(r["workload"], r["kv_gb"]) for r in rows if r["kv_gb"]}):
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
        for pol in sorted({r["policy"] for r in rows if r["workload"] == wl}):
            pts = sorted((r["jps"], r["mean_jct_over_mean_ideal"], r["prefix_hit_rate"]) for r in rows
                         if r["workload"] == wl and r["policy"] == pol
                         and (r["kv_gb"] == gb or (pol == UNBOUNDED and not r["kv_gb"])))
            if not pts:
                continue
            style = dict(linestyle="--", color="grey") if pol == UNBOUNDED else dict(marker="o")
            a1.plot([p[0] for p in pts], [p[1] for p in pts], label=pol, **style)
            if pol != UNBOUNDED:
                a2.plot([p[0] for p in pts], [p[2] for p in pts], label=pol, marker="o")
        a1.axhline(limit, color="red", linewidth=0.8)
        a1.set_yscale("log")
        a1.set_xlabel("load (programs/s)")
        a1.set_ylabel("mean JCT / mean ideal JCT")
        a1.set_title(f"{wl}, {gb:g} GB KV")
        a1.legend()
        a2.set_xlabel("load (programs/s)")
        a2.set_ylabel("prefix-cache hit rate")
        a2.set_title(f"{wl}, {gb:g} GB KV")
        a2.legend()
        fig.tight_layout()
        name = f"{wl}_{gb:g}gb.png"
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        files.append(name)
    return files


def reused(path: str, fresh: list[str], jobs: list[tuple]) -> tuple[list[dict], list[tuple]]:
    """(runs of ``path`` for the planned jobs whose policy is not in ``fresh``, the jobs left to
    run). Exits if a reused run is missing or ``path`` was made with other knobs or profile."""
    have = earlier_runs(path, "per_seed", {"sched_kw": jobs[0][6], "profile": jobs[0][7]} if jobs else {})
    rows, left = [], []
    for j in jobs:
        wl, gb, jps, pol, _, seed, _, _ = j
        if pol in fresh:
            left.append(j)
        elif (wl, gb, jps, pol, seed) not in have:
            sys.exit(f"--reuse {path}: no run of {pol} for {wl} {gb:g} GB at {jps:g} JPS, seed {seed}")
        else:
            rows.append(have[(wl, gb, jps, pol, seed)])
    return rows, left


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", action="append", choices=["swe-final", "swe", "bfcl"])
    ap.add_argument("--kv-gb", default=None, help="comma-separated KV budgets (GB) for every workload")
    ap.add_argument("--loads", default=None, help="comma-separated loads (JPS) for every workload")
    ap.add_argument("--policies", default=",".join(POLICIES))
    ap.add_argument("--num-programs", type=int, default=100)
    ap.add_argument("--seeds", default="0,1", help="comma-separated seeds (trace and arrivals); "
                    "ratios are averaged over seeds")
    ap.add_argument("--profile", default="h200-llama3.1-8b")
    ap.add_argument("--limit", type=float, default=2.0, help="sustainable: mean JCT <= limit x ideal")
    ap.add_argument("--admission-target", type=float, default=None)
    ap.add_argument("--door-max-wait", type=float, default=None)
    ap.add_argument("--no-unbounded", action="store_true", help="skip the unbounded-KV reference")
    ap.add_argument("--reuse", default=None, metavar="RESULTS_JSON",
                    help="take the runs of policies not listed in --fresh from this earlier results.json "
                         "(same seeds, limit, knobs and profile; the simulator is deterministic)")
    ap.add_argument("--fresh", default="", help="with --reuse: comma-separated policies to rerun")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()

    sched_kw = {k: v for k, v in (("admission_target", a.admission_target),
                                  ("door_max_wait", a.door_max_wait)) if v is not None}
    jobs = []
    seeds = [int(x) for x in a.seeds.split(",")]
    for wl in a.workload or list(DEFAULT_GRID):
        gbs, loads = DEFAULT_GRID.get(wl, DEFAULT_GRID["swe-final"])
        gbs = [float(x) for x in a.kv_gb.split(",")] if a.kv_gb else gbs
        loads = [float(x) for x in a.loads.split(",")] if a.loads else loads
        for jps in loads:
            for seed in seeds:
                if not a.no_unbounded:
                    jobs.append((wl, 0, jps, UNBOUNDED, a.num_programs, seed, sched_kw, a.profile))
                for gb in gbs:
                    for pol in a.policies.split(","):
                        jobs.append((wl, gb, jps, pol, a.num_programs, seed, sched_kw, a.profile))
    rows = []
    if a.reuse:
        rows, jobs = reused(a.reuse, a.fresh.split(","), jobs)
    t0 = time.time()
    with ProcessPoolExecutor(max_workers=a.jobs) as ex:
        for i, row in enumerate(ex.map(_run, jobs), 1):
            rows.append(row)
            print(f"[{i}/{len(jobs)} {time.time() - t0:5.0f}s] {row['workload']} {row['kv_gb']:g}GB "
                  f"{row['jps']:g} JPS {row['policy']:>20}: JCT/ideal {row['mean_jct_over_mean_ideal']:6.2f}  "
                  f"P95 {row['jct_p95']:7.1f}s  TTFT P99 {row['ttft_p99']:7.1f}s  hit {row['prefix_hit_rate']:.3f}  "
                  f"preempt {row['preemptions']}", flush=True)
    per_seed, rows = rows, mean_over_seeds(rows)
    sustain = []
    for wl, gb in sorted({(r["workload"], r["kv_gb"]) for r in rows}):
        for pol in sorted({r["policy"] for r in rows if r["workload"] == wl and r["kv_gb"] == gb}):
            pts = [(r["jps"], r["mean_jct_over_mean_ideal"]) for r in rows
                   if r["workload"] == wl and r["kv_gb"] == gb and r["policy"] == pol]
            sustain.append({"workload": wl, "kv_gb": gb, "policy": pol,
                            "sustainable_jps": sustainable_load(pts, a.limit)})
    lines = ["| workload | KV GB | policy | sustainable JPS | vs vllm | vs continuum |", "|---|---|---|---|---|---|"]
    for s in sustain:
        base = {p["policy"]: p["sustainable_jps"] for p in sustain
                if p["workload"] == s["workload"] and p["kv_gb"] == s["kv_gb"]}
        rel = [f"{s['sustainable_jps'] / base[b]:.2f}x" if s["sustainable_jps"] and base.get(b) else "-"
               for b in ("vllm", "continuum")]
        v = s["sustainable_jps"]
        lines.append(f"| {s['workload']} | {s['kv_gb']:g} | {s['policy']} | "
                     f"{'-' if v is None else f'{v:.4f}'} | {rel[0]} | {rel[1]} |")
    table = "\n".join(lines)
    print(table)
    if a.out:
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        cmd = "python " + " ".join(shlex.quote(x) for x in sys.argv)
        (out / "results.json").write_text(json.dumps({"command": cmd, "limit": a.limit, "seeds": seeds,
                                                      "sched_kw": sched_kw, "profile": a.profile,
                                                      "rows": rows, "per_seed": per_seed,
                                                      "sustainable": sustain}, indent=1))
        plots = _plots(rows, out, a.limit)
        head = ["workload", "KV GB", "JPS", "policy", "JCT/ideal", "mean JCT s", "P95 s", "TTFT P50 s",
                "TTFT P99 s", "hit rate", "preempt"]
        detail = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in sorted(rows, key=lambda r: (r["workload"], r["kv_gb"], r["jps"], r["policy"])):
            detail.append(f"| {r['workload']} | {r['kv_gb']:g} | {r['jps']:g} | {r['policy']} | "
                          f"{r['mean_jct_over_mean_ideal']:.2f} | {r['jct_mean']:.1f} | {r['jct_p95']:.1f} | "
                          f"{r['ttft_p50']:.2f} | {r['ttft_p99']:.1f} | {r['prefix_hit_rate']:.3f} | {r['preemptions']:.0f} |")
        (out / "report.md").write_text(
            f"# Load sweeps: sustainable load per policy\n\nCommand: `{cmd}`\n\n"
            f"Simulator, profile `{a.profile}`, {a.num_programs} programs per run, seeds {seeds} "
            f"(every number is the mean over seeds); "
            f"sustainable = highest load with mean JCT <= {a.limit:g} x mean ideal JCT (interpolated).\n\n"
            f"{table}\n\n" + "\n".join(f"![{p}]({p})" for p in plots) + "\n\n" + "\n".join(detail) + "\n")
        print(f"wrote {out}/results.json, report.md, {len(plots)} plots")
    return 0


if __name__ == "__main__":
    sys.exit(main())
