"""The door-wait frontier: continuum+'s mean JCT and turn-TTFT P99 (each / vllm's, per seed)
at past-the-cliff points of the matrix, for each bound on a newcomer's wait at the door.

    python benchmarks/results/door-wait-frontier/frontier.py                  # before demotion
    python benchmarks/results/door-wait-frontier/frontier.py after-demotion   # after it

Reads ``DIR/points-w*/results.json`` (``benchmarks/matrix.py --point ...`` with
``door_max_wait`` = W, README.md; ``points-w600`` holds the matrix's own rows at these points,
the default then) and prints one row per point and bound, the largest bound first.
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def ratios(rows: list[dict], point: tuple, key: str) -> list[float]:
    wl, gb, jps = point
    def get(policy: str, seed: int):
        return next((r[key] for r in rows if (r["workload"], r["kv_gb"], r["jps"]) == point
                     and r["policy"] == policy and r["seed"] == seed), None)
    return [c / v for s in (0, 1, 2)
            if (v := get("vllm", s)) and (c := get("continuum+", s)) is not None]


def fmt(xs: list[float]) -> str:
    return f"{statistics.mean(xs):.2f} ({' / '.join(f'{x:.2f}' for x in xs)})" if xs else "-"


def main() -> None:
    folder = HERE / (sys.argv[1] if len(sys.argv) > 1 else ".")
    paths = sorted(folder.glob("points-w*/results.json"), key=lambda p: -float(p.parent.name[len("points-w"):]))
    runs = {p.parent.name[len("points-w"):]: json.loads(p.read_text())["rows"] for p in paths}
    points = sorted({(r["workload"], r["kv_gb"], r["jps"]) for rows in runs.values() for r in rows})
    print("| point | door_max_wait s | mean JCT x vllm (seeds 0/1/2) | turn-TTFT P99 x vllm (seeds) |")
    print("|---|---|---|---|")
    for point in points:
        for name, rows in runs.items():
            print(f"| {point[0]} {point[1]:g} GB @ {point[2]:g} | {name} | {fmt(ratios(rows, point, 'jct_mean'))} "
                  f"| {fmt(ratios(rows, point, 'ttft_p99'))} |")


if __name__ == "__main__":
    main()
