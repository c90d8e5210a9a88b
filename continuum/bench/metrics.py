"""Summary metrics of one replay run (METHOD.md section 5).

Input: the per-program records (replay.ProgramRecord) of one (policy, load) run plus the
target's flat stats dict (``LLMEngine.stats()`` keys when known). Every number is computed
from the records where possible, so all targets (engine, http, sim) are comparable; counters
only the engine knows (pins, preemptions, swaps) come from the stats dict when present.
"""
from __future__ import annotations

from typing import Any

import numpy as np


def _pct(xs: list[float], q: float) -> float | None:
    return float(np.percentile(xs, q)) if xs else None


def summarize(programs: list, stats: dict[str, float] | None = None,
              duration: float | None = None) -> dict[str, Any]:
    """Mean/P50/P90/P95/P99 JCT, JCT/ideal, TTFT, throughput, hit rate, engine counters.

    ``duration``: the run's makespan (first arrival to last finish) if known; else from records.
    """
    stats = stats or {}
    done = [p for p in programs if p.finish is not None]
    jct = [p.jct for p in done]
    ratio = [p.jct / p.ideal for p in done if p.ideal]
    turns = [t for p in done for t in p.turns]
    ttft = [t.ttft for t in turns if t.ttft is not None]
    out_tokens = sum(t.output_tokens for t in turns)
    prompt = sum(t.prompt_tokens for t in turns)
    cached = sum(t.cached_tokens for t in turns)
    if duration is None and done:
        duration = max(p.finish for p in done) - min(p.arrival for p in programs)
    duration = duration or float("nan")
    s: dict[str, Any] = {
        "programs": len(programs), "completed": len(done), "turns": len(turns),
        "jct_mean": float(np.mean(jct)) if jct else None,
        "jct_p50": _pct(jct, 50), "jct_p90": _pct(jct, 90), "jct_p95": _pct(jct, 95),
        "jct_p99": _pct(jct, 99),
        "ideal_mean": float(np.mean([p.ideal for p in done if p.ideal])) if ratio else None,
        "jct_over_ideal_mean": float(np.mean(ratio)) if ratio else None,
        "jct_over_ideal_p95": _pct(ratio, 95),
        "ttft_mean": float(np.mean(ttft)) if ttft else None,
        "ttft_p50": _pct(ttft, 50), "ttft_p99": _pct(ttft, 99),
        "ttft_max": float(max(ttft)) if ttft else None,
        "output_tok_per_s": out_tokens / duration if duration == duration else None,
        "programs_per_min": len(done) / duration * 60 if duration == duration else None,
        "makespan_s": duration,
        "prefix_hit_rate": cached / prompt if prompt else 0.0,
        "preemptions": stats.get("preemptions_total", sum(t.preemptions for t in turns)),
    }
    # Counters the scheduling policies add (pins, swaps, host tier): pass every such key through.
    for k, v in stats.items():
        if (any(w in k for w in ("pin", "swap", "host", "offload", "evict", "scheduler_time"))
                and not k.startswith("pin_ttl_ms_le") and isinstance(v, (int, float))):
            s[k] = v
    if "prefix_cache_queries_total" in stats and stats["prefix_cache_queries_total"]:
        s["engine_prefix_hit_rate"] = stats["prefix_cache_hits_total"] / stats["prefix_cache_queries_total"]
    return s


def jct_values(programs: list) -> list[float]:
    return sorted(p.jct for p in programs if p.finish is not None)
