"""Combining per-replica results into what a one-engine caller expects.

``merge_stats`` folds N ``LLMEngine.stats()`` dicts into one: counters and gauges add up,
except ratios (averaged) and maxima (max). ``merge_results`` does that for whatever an
``engine.call(fn)`` returned on every replica (stats dicts, the /debug/kv integrity report)
and, for flat stats, also keeps each replica's own numbers as ``replica{i}_{key}`` so
/metrics shows per-replica series without any change to the metrics code.
"""
from __future__ import annotations

from typing import Any

# Stats that are ratios or means: averaging keeps them in range.
_AVERAGED = ("kv_usage", "pin_ttl_eta", "pin_ttl_queue_delay_seconds", "step_cost_fitted",
             "step_cost_step_floor_s", "step_cost_per_prefill_token_s", "step_cost_per_attention_pair_s")


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def merge_stats(per: list[dict[str, Any]]) -> dict[str, float]:
    """Sum numeric keys over replicas; average ``_AVERAGED`` keys; max keys ending ``_max``."""
    out: dict[str, float] = {}
    for st in per:
        for k, v in st.items():
            if _number(v):
                out[k] = out.get(k, 0.0) + v
    n = max(len(per), 1)
    for k in _AVERAGED:
        if k in out:
            out[k] /= n
    for k in out:
        if k.endswith("_max"):
            out[k] = max(st.get(k, 0.0) for st in per if _number(st.get(k, 0.0)))
    return out


def _flat_numbers(d: dict) -> bool:
    return bool(d) and all(_number(v) for v in d.values())


def merge_results(results: dict[int, Any]) -> Any:
    """Merge ``{replica: result}``: flat numeric dicts as stats (+ per-replica keys), other
    dicts key by key (bools all-true, numbers/dicts merged, else the first non-None), and
    anything else as the ``{replica: result}`` mapping itself."""
    values = list(results.values())
    if not values:
        return {}
    if all(isinstance(v, dict) and _flat_numbers(v) for v in values):
        merged: dict[str, Any] = merge_stats(values)
        for r, v in sorted(results.items()):
            for k, x in v.items():
                merged[f"replica{r}_{k}"] = x
        return merged
    if all(isinstance(v, dict) for v in values):
        out: dict[str, Any] = {}
        for key in dict.fromkeys(k for v in values for k in v):
            sub = {r: v[key] for r, v in results.items() if key in v}
            xs = list(sub.values())
            if all(isinstance(x, bool) for x in xs):
                out[key] = all(xs)
            elif all(isinstance(x, dict) for x in xs) or all(_number(x) for x in xs):
                out[key] = merge_results(sub) if isinstance(xs[0], dict) else sum(xs)
            else:
                out[key] = next((x for x in xs if x is not None), None)
        return out
    return dict(results)
