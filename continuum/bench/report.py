"""Results JSON, markdown report and matplotlib PNG plots of a bench run.

``results`` (what run_bench returns and results.json holds)::

    {"command": "...", "config": {...}, "runs": [
        {"workload": "swe", "policy": "vllm", "jps": 0.1, "target": "sim",
         "summary": {...metrics.summarize...}, "jcts": [...], "timeline": [...]}, ...]}
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

COLUMNS = [("jct_mean", "mean JCT s", 2), ("jct_p50", "P50", 2), ("jct_p95", "P95", 2), ("jct_p99", "P99", 2),
           ("jct_over_ideal_mean", "JCT/ideal", 2), ("ttft_p50", "TTFT P50 s", 3), ("ttft_p99", "TTFT P99 s", 2),
           ("ttft_max", "TTFT max s", 2), ("output_tok_per_s", "out tok/s", 0), ("programs_per_min", "prog/min", 2),
           ("prefix_hit_rate", "hit rate", 3), ("preemptions", "preempt", 0)]


def _fmt(v: Any, nd: int) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def load_label(jps: float | None) -> str:
    """A run's load as printed: its JPS, or ``trace`` when arrivals came from the trace."""
    return "trace" if jps is None else f"{jps:g}"


def markdown_table(runs: list[dict[str, Any]]) -> str:
    extra = sorted({k for r in runs for k in r["summary"] if k.endswith("_total") and
                    any(w in k for w in ("pin", "swap"))})
    head = ["workload", "JPS", "policy"] + [c[1] for c in COLUMNS] + extra
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in runs:
        s = r["summary"]
        row = [r["workload"], load_label(r["jps"]), r["policy"]]
        row += [_fmt(s.get(k), nd) for k, _, nd in COLUMNS] + [_fmt(s.get(k), 0) for k in extra]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def ratio_lines(runs: list[dict[str, Any]], baseline: str = "vllm") -> list[str]:
    """Per (workload, load): each policy's mean and P95 JCT relative to ``baseline``."""
    out = []
    for r in runs:
        base = next((b for b in runs if b["workload"] == r["workload"] and b["jps"] == r["jps"]
                     and b["policy"] == baseline and b.get("target") == r.get("target")), None)
        if base is None or r["policy"] == baseline or not base["summary"]["jct_mean"]:
            continue
        s, b = r["summary"], base["summary"]
        at = "trace arrivals" if r["jps"] is None else f"{r['jps']:g} JPS"
        out.append(f"- {r['workload']} @ {at}: {r['policy']} mean JCT "
                   f"{s['jct_mean'] / b['jct_mean']:.2f}x {baseline}, P95 {s['jct_p95'] / b['jct_p95']:.2f}x, "
                   f"TTFT P99 {s['ttft_p99']:.2f}s vs {b['ttft_p99']:.2f}s")
    return out


def write_results(results: dict[str, Any], out_dir: str | Path) -> Path:
    """Write ``results.json`` into ``out_dir`` (created if needed); returns its path. Written
    before anything is rendered from it, so a failing report never loses a run."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    path.write_text(json.dumps(results, indent=1, default=_jsonable) + "\n")
    return path


def write_report(results: dict[str, Any], out_dir: str | Path, title: str = "continuum bench") -> list[Path]:
    """Write results.json, then report.md and the PNG plots, into ``out_dir``; returns every
    file written, results.json first."""
    out = Path(out_dir)
    written = [write_results(results, out)]
    plots = make_plots(results["runs"], out)
    md = [f"# {title}", "", "Command:", "", "```", results.get("command", ""), "```", "",
          f"Tree: `{results.get('git', 'unknown')}`", "",
          "Config: `" + json.dumps(results.get("config", {}), default=_jsonable) + "`", "",
          markdown_table(results["runs"]), ""]
    ratios = ratio_lines(results["runs"])
    if ratios:
        md += ["Relative to vllm:", ""] + ratios + [""]
    md += [f"![{p.stem}]({p.name})" for p in plots]
    path = out / "report.md"
    path.write_text("\n".join(md) + "\n")
    return written + [path] + plots


def make_plots(runs: list[dict[str, Any]], out: Path) -> list[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    paths = []
    for wl in sorted({r["workload"] for r in runs}):
        wr = [r for r in runs if r["workload"] == wl]
        loads = sorted({r["jps"] for r in wr if r["jps"] is not None})
        policies = list(dict.fromkeys(r["policy"] for r in wr))
        top = loads[-1] if loads else None
        # JCT CDF per policy at the highest load.
        fig, ax = plt.subplots(figsize=(6, 4))
        for r in wr:
            if r["jps"] == top and r["jcts"]:
                x = np.sort(r["jcts"])
                ax.plot(x, np.arange(1, len(x) + 1) / len(x), label=r["policy"])
        ax.set(xlabel="JCT (s)", ylabel="fraction of programs", title=f"{wl}: JCT CDF at {top} JPS")
        ax.legend(); ax.grid(alpha=.3)
        paths.append(_save(fig, out / f"{wl}_jct_cdf.png"))
        # Mean JCT vs load.
        if len(loads) > 1:
            fig, ax = plt.subplots(figsize=(6, 4))
            for pol in policies:
                pts = sorted((r["jps"], r["summary"]["jct_mean"]) for r in wr if r["policy"] == pol)
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=pol)
            ax.set(xlabel="load (JPS)", ylabel="mean JCT (s)", title=f"{wl}: mean JCT vs load")
            ax.legend(); ax.grid(alpha=.3)
            paths.append(_save(fig, out / f"{wl}_jct_vs_load.png"))
        # Pinned KV (and KV usage) over time at the highest load.
        fig, ax = plt.subplots(figsize=(6, 4))
        for r in wr:
            tl = r.get("timeline") or []
            if r["jps"] == top and tl:
                total = r.get("num_blocks") or 1
                ax.plot([p["t"] for p in tl], [p["pinned_blocks"] / total for p in tl], label=f"{r['policy']} pinned")
                ax.plot([p["t"] for p in tl], [p["kv_usage"] for p in tl], ls=":", alpha=.6,
                        label=f"{r['policy']} KV in use")
        ax.set(xlabel="time (s)", ylabel="fraction of KV blocks", title=f"{wl}: pinned KV over time at {top} JPS")
        ax.legend(fontsize=7); ax.grid(alpha=.3)
        paths.append(_save(fig, out / f"{wl}_pinned_kv.png"))
    return paths


def _jsonable(v: Any) -> Any:
    """numpy scalars -> float, dataclasses (configs) -> dicts, anything else -> str."""
    import dataclasses
    if dataclasses.is_dataclass(v):
        return dataclasses.asdict(v)
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt
    plt.close(fig)
    return path
