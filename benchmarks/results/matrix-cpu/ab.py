"""ab-<workload>.md for ab.sh: per load, continuum+ of this tree (B) and of BASE (A) against vllm of the
same seed's engine run, B / A, and the simulator's prediction of B against its vllm (where
``<workload>-s<seed>-sim`` exists), on mean JCT, P95 JCT and turn-TTFT P99: per-seed ratios,
mean [95% CI] over the seeds (the matrix's ``mean_ci``), with each seed's B / A listed.

    python benchmarks/results/matrix-cpu/ab.py DIR mix 0 1 2 3 4
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from matrix import _fmt_ci, mean_ci  # noqa: E402

METRICS = (("jct_mean", "mean JCT"), ("jct_p95", "P95 JCT"), ("ttft_p99", "turn-TTFT P99"))


def load(path: Path) -> dict[tuple[float, str], dict] | None:
    if not path.is_file():
        return None
    return {(r["jps"], r["policy"]): r["summary"] for r in json.loads(path.read_text())["runs"]}


def main(d: Path, workload: str, seeds: list[str]) -> str:
    runs = [[load(d / f"{workload}-s{s}-{t}" / "results.json") for t in ("engine", "base", "sim")]
            for s in seeds]
    sim = all(r[2] is not None for r in runs)
    head = ["JPS", "metric", "A (BASE) x vllm", "B (this tree) x vllm", "B / A", "per seed B / A"]
    head += ["simulator's B x vllm"] if sim else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for jps in sorted({j for j, _ in runs[0][0]}):
        for m, name in METRICS:
            a = [base[(jps, "continuum+")][m] / new[(jps, "vllm")][m] for new, base, _ in runs]
            b = [new[(jps, "continuum+")][m] / new[(jps, "vllm")][m] for new, _, _ in runs]
            ba = [y / x for x, y in zip(a, b)]
            cells = [f"{jps:g}", name, _fmt_ci(mean_ci(a)), _fmt_ci(mean_ci(b)), _fmt_ci(mean_ci(ba)),
                     " ".join(f"{x:.2f}" for x in ba)]
            if sim:
                cells.append(_fmt_ci(mean_ci([s[(jps, "continuum+")][m] / s[(jps, "vllm")][m]
                                              for _, _, s in runs])))
            lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    (d / f"ab-{workload}.md").write_text(f"{workload}, seeds {', '.join(seeds)}; ratios per seed, mean [95% CI].\n\n" + table)
    return table


if __name__ == "__main__":
    print(main(Path(sys.argv[1]), sys.argv[2], sys.argv[3:]))
