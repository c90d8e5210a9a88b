"""compare.md for run.sh: per (workload, load, policy), the real CPU engine beside the
simulator's prediction of the same runs. Ratios to vllm are taken per seed (same trace and
arrivals) and shown as mean [95% CI] over the seeds, as in the matrix's report.

    python benchmarks/results/matrix-cpu/compare.py benchmarks/results/matrix-cpu 0 1 2
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from matrix import _fmt_ci, mean_ci  # noqa: E402

METRICS = (("jct_mean", "mean JCT"), ("ttft_p99", "turn-TTFT P99"))


def load(d: Path, workload: str, seed: str, target: str) -> dict[tuple[float, str], dict]:
    runs = json.loads((d / f"{workload}-s{seed}-{target}" / "results.json").read_text())["runs"]
    return {(r["jps"], r["policy"]): r["summary"] for r in runs}


def main(d: Path, seeds: list[str]) -> str:
    head = ["workload", "JPS", "policy"]
    for _, name in METRICS:
        head += [f"{name} s (engine / sim)", "x vllm engine", "x vllm sim"]
    head += ["hit rate (engine / sim)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for w in [w for w in ("chat", "mix") if (d / f"{w}-s{seeds[0]}-engine").is_dir()]:
        runs = {t: [load(d, w, s, t) for s in seeds] for t in ("engine", "sim")}
        for jps, pol in runs["engine"][0]:
            cells = [w, f"{jps:g}", pol]
            for m, _ in METRICS:
                mean = {t: sum(r[(jps, pol)][m] for r in runs[t]) / len(seeds) for t in runs}
                ratio = {t: mean_ci([r[(jps, pol)][m] / r[(jps, "vllm")][m] for r in runs[t]]) for t in runs}
                cells += [f"{mean['engine']:.2f} / {mean['sim']:.2f}", _fmt_ci(ratio["engine"]),
                          _fmt_ci(ratio["sim"])]
            hit = {t: sum(r[(jps, pol)]["prefix_hit_rate"] for r in runs[t]) / len(seeds) for t in runs}
            cells.append(f"{hit['engine']:.3f} / {hit['sim']:.3f}")
            lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    (d / "compare.md").write_text(f"Seeds {', '.join(seeds)}; ratios per seed, mean [95% CI].\n\n" + table)
    return table


if __name__ == "__main__":
    print(main(Path(sys.argv[1]), sys.argv[2:]))
