"""Results JSON, the printed summary, the markdown report and the plots of a bench run.

``results`` (what run_bench returns and results.json holds)::

    {"command": "...", "config": {...}, "runs": [
        {"workload": "swe", "policy": "vllm", "jps": 0.1, "target": "sim",
         "summary": {...metrics.summarize...}, "jcts": [...], "timeline": [...]}, ...]}

What a newcomer reads first is ``summary_tables`` (one short table per workload and load,
at most ``SUMMARY_WIDTH`` characters wide) and ``glossary_lines``; every counter is in
``markdown_table``, which only report.md carries.
"""
from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

from continuum.bench.plots import make_plots

BASELINE = "vllm"

# The terms the tables use, defined once (printed under the summary, at the top of report.md,
# and in docs/benchmarks.md, which a test keeps identical).
GLOSSARY = [
    ("JCT", "job completion time, from a program's arrival to the end of its last turn, tool time "
            "included (seconds)."),
    ("JPS", "the load, programs (jobs) arriving per second (Poisson); 'trace' = the trace's own "
            "arrival times."),
    ("ideal", "a program's JCT alone on the target: isolated turn times from the profile's cost "
              "model (every turn hitting the previous turn's KV) plus tool times. x ideal = mean "
              "over programs of JCT / ideal ('-' without a profile)."),
    ("x vllm", "mean JCT / vllm's mean JCT, and P95 JCT / vllm's P95 JCT, at the same workload and "
               "load ('-' when vllm did not run)."),
    ("TTFT P99", "99th percentile over all turns of a turn's time to first token (seconds)."),
    ("hit rate", "prompt tokens served from the prefix cache / all prompt tokens."),
]

# Every counter, one row per run (report.md only).
COLUMNS = [("jct_mean", "mean JCT s", 2), ("jct_p50", "P50", 2), ("jct_p95", "P95", 2), ("jct_p99", "P99", 2),
           ("jct_over_ideal_mean", "JCT/ideal", 2), ("ttft_p50", "TTFT P50 s", 3), ("ttft_p99", "TTFT P99 s", 2),
           ("ttft_max", "TTFT max s", 2), ("output_tok_per_s", "out tok/s", None),
           ("programs_per_min", "prog/min", 2), ("prefix_hit_rate", "hit rate", 3), ("preemptions", "preempt", 0)]

SUMMARY_HEAD = ["policy", "mean JCT s", "P95 JCT s", "x ideal", "x vllm mean / P95", "TTFT P99 s", "hit rate"]
SUMMARY_WIDTH = 100


def fmt_sig(v: float | None, digits: int = 3) -> str:
    """``v`` to ``digits`` significant digits without exponent (rates: 0.0412, 4.12, 41.2, 4120)."""
    if v is None or v != v:
        return "-"
    if v == 0:
        return "0"
    import math
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(v))))
    return f"{v:.{decimals}f}"


def _fmt(v: Any, nd: int | None) -> str:
    """None -> ``-``; floats to ``nd`` decimals (``nd`` None: 3 significant digits)."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return fmt_sig(v) if nd is None else f"{v:.{nd}f}"
    return str(v)


def load_label(jps: float | None) -> str:
    """A run's load as printed: its JPS, or ``trace`` when arrivals came from the trace."""
    return "trace" if jps is None else f"{jps:g}"


def point_label(workload: str, jps: float | None) -> str:
    """``swe @ 0.1 JPS`` or ``swe @ trace arrivals``."""
    return f"{workload} @ {'trace arrivals' if jps is None else f'{jps:g} JPS'}"


def markdown_table(runs: list[dict[str, Any]]) -> str:
    """Every run with every counter (``COLUMNS`` + each pin/swap ``*_total`` counter)."""
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


def _points(runs: list[dict[str, Any]]) -> list[tuple[str, float | None, str | None]]:
    """(workload, load, target) in the order the runs came."""
    return list(dict.fromkeys((r["workload"], r["jps"], r.get("target")) for r in runs))


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a is not None and b else "-"


def summary_rows(runs: list[dict[str, Any]], baseline: str = BASELINE) -> list[list[str]]:
    """``SUMMARY_HEAD`` cells for runs of one (workload, load) point, in run order."""
    base = next((r["summary"] for r in runs if r["policy"] == baseline), None)
    rows = []
    for r in runs:
        s = r["summary"]
        vs = "-" if base is None else f"{_ratio(s['jct_mean'], base['jct_mean'])} / " \
                                      f"{_ratio(s['jct_p95'], base['jct_p95'])}"
        rows.append([r["policy"], _fmt(s["jct_mean"], 2), _fmt(s["jct_p95"], 2),
                     _fmt(s.get("jct_over_ideal_mean"), 2), vs, _fmt(s["ttft_p99"], 2),
                     _fmt(s["prefix_hit_rate"], 3)])
    return rows


def _aligned(head: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table padded to aligned columns (readable as plain text); numbers right-aligned."""
    widths = [max(len(x) for x in col) for col in zip(head, *rows)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths))) + " |"
    rule = "|" + "|".join("-" * (w + 1) + ("-" if i == 0 else ":") for i, w in enumerate(widths)) + "|"
    return [line(head), rule] + [line(r) for r in rows]


def summary_tables(runs: list[dict[str, Any]], heading: str = "") -> list[str]:
    """One short table per (workload, load) point, each under a ``<heading><point>`` line:
    policy, mean and P95 JCT, x ideal, x vllm, TTFT P99, hit rate. ``heading`` is ``""`` for
    the terminal and ``"### "`` for report.md."""
    out: list[str] = []
    for wl, jps, target in _points(runs):
        pr = [r for r in runs if r["workload"] == wl and r["jps"] == jps and r.get("target") == target]
        n = pr[0]["summary"]["programs"]
        out += [f"{heading}{point_label(wl, jps)} ({n} programs)", "",
                *_aligned(SUMMARY_HEAD, summary_rows(pr)), ""]
    return out


def glossary_lines(markdown: bool = False) -> list[str]:
    """The glossary: ``- **term**: definition`` lines for markdown, else lines wrapped at
    ``SUMMARY_WIDTH`` with continuation lines indented."""
    if markdown:
        return [f"- **{term}**: {text}" for term, text in GLOSSARY]
    return [line for term, text in GLOSSARY
            for line in textwrap.wrap(f"{term}: {text}", SUMMARY_WIDTH, subsequent_indent="    ")]


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
    md = [f"# {title}", "", *glossary_lines(markdown=True), "", "Command:", "", "```", results.get("command", ""), "```", "",
          f"Tree: `{results.get('git', 'unknown')}`", "",
          "Config: `" + json.dumps(results.get("config", {}), default=_jsonable) + "`", "",
          "## Summary", "", *summary_tables(results["runs"], heading="### "),
          "## Every counter", "", markdown_table(results["runs"]), ""]
    md += [f"![{p.stem}]({p.name})" for p in plots]
    path = out / "report.md"
    path.write_text("\n".join(md) + "\n")
    return written + [path] + plots


def _jsonable(v: Any) -> Any:
    """numpy scalars -> float, dataclasses (configs) -> dicts, anything else -> str."""
    import dataclasses
    if dataclasses.is_dataclass(v):
        return dataclasses.asdict(v)
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v)
