"""The door-wait frontier: continuum+'s mean JCT and turn-TTFT P99 (each / vllm's, per seed)
at five past-the-cliff points of the matrix, for each bound on a newcomer's wait at the door.

    python benchmarks/results/door-wait-frontier/frontier.py

Reads ``points-w*/results.json`` (``benchmarks/matrix.py --point ... --set door_max_wait=W``,
README.md) and the matrix's own results for the default (600 s).
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path

HERE = Path(__file__).resolve().parent
POINTS = [("swe", 10, 1.0), ("short-agent", 4, 3.0), ("coding-agent", 40, 0.4), ("mix", 20, 0.5),
          ("bfcl", 30, 0.24)]
SOURCES = [("600 (default)", HERE.parent / "matrix" / "results.json")] + [
    (str(w), HERE / f"points-w{w}" / "results.json") for w in (300, 120, 60, 30, 10)]


def ratios(rows: list[dict], point: tuple, key: str) -> list[float]:
    wl, gb, jps = point
    def get(policy: str, seed: int):
        return next((r[key] for r in rows if r["workload"] == wl and r["kv_gb"] == gb
                     and abs(r["jps"] - jps) < 1e-9 and r["policy"] == policy and r["seed"] == seed), None)
    return [c / v for s in (0, 1, 2)
            if (v := get("vllm", s)) and (c := get("continuum+", s)) is not None]


def fmt(xs: list[float]) -> str:
    return f"{statistics.mean(xs):.2f} ({' / '.join(f'{x:.2f}' for x in xs)})" if xs else "-"


def main() -> None:
    runs = {name: json.loads(path.read_text())["rows"] for name, path in SOURCES}
    print("| point | door_max_wait s | mean JCT x vllm (seeds 0/1/2) | turn-TTFT P99 x vllm (seeds) |")
    print("|---|---|---|---|")
    for point in POINTS:
        for name, rows in runs.items():
            print(f"| {point[0]} {point[1]} GB @ {point[2]:g} | {name} | {fmt(ratios(rows, point, 'jct_mean'))} "
                  f"| {fmt(ratios(rows, point, 'ttft_p99'))} |")


if __name__ == "__main__":
    main()
