"""Past the cliff, does the door's turn-TTFT tail against vllm's depend on the run's length?

    python benchmarks/results/door-wait-frontier/run_length.py

Reads ``run-length/<point>-n<N>/results.json`` (``benchmarks/matrix.py --point P
--num-programs N --policies vllm,continuum+ --no-unbounded``, README.md) and prints, per point
and number of programs, each policy's turn-TTFT P99 and mean JCT (mean over seeds) and
continuum+'s ratios to vllm (mean over seeds of the per-seed ratio).
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

HERE = Path(__file__).resolve().parent / "run-length"


def main() -> None:
    print("| point | programs | vllm turn-TTFT P99 s | continuum+ turn-TTFT P99 s | x vllm | "
          "mean JCT x vllm |")
    print("|---|---|---|---|---|---|")
    runs = sorted(HERE.glob("*-n*/results.json"),
                  key=lambda p: (p.parent.name.rsplit("-n", 1)[0], int(p.parent.name.rsplit("-n", 1)[1])))
    for path in runs:
        name, n = path.parent.name.rsplit("-n", 1)
        rows = json.loads(path.read_text())["rows"]
        by = {(r["policy"], r["seed"]): r for r in rows}
        seeds = sorted({s for _, s in by})
        v = [by[("vllm", s)] for s in seeds]
        c = [by[("continuum+", s)] for s in seeds]
        mean = statistics.mean
        point = f"{rows[0]['workload']} {rows[0]['kv_gb']:g} GB @ {rows[0]['jps']:g}"
        print(f"| {point} | {n} | {mean(r['ttft_p99'] for r in v):.1f} | {mean(r['ttft_p99'] for r in c):.1f} "
              f"| {mean(b['ttft_p99'] / a['ttft_p99'] for a, b in zip(v, c)):.2f} "
              f"| {mean(b['jct_mean'] / a['jct_mean'] for a, b in zip(v, c)):.2f} |")


if __name__ == "__main__":
    main()
