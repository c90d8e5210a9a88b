"""Scheduler counters and gauges (plain numbers), and ``scheduler_stats``: their flat dict."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from continuum.scheduler.policy import PIN_DECISIONS

if TYPE_CHECKING:
    from continuum.scheduler.scheduler import Scheduler

# Upper bounds (ms) of the TTL histogram buckets; the last one is +inf.
TTL_BUCKETS_MS = (0, 100, 250, 500, 1000, 2000, 4000, 8000, 16000, 32000, math.inf)


@dataclass
class SchedulerStats:
    num_steps: int = 0
    num_preemptions: int = 0
    num_finished: int = 0
    total_queueing_delay: float = 0.0
    num_admissions: int = 0
    # pins (METHOD 2.1)
    pins_made: int = 0
    pins_hit: int = 0                 # the program's next turn was admitted while pinned
    pins_expired: int = 0
    pins_force_released: int = 0      # released under memory pressure
    pins_rejected: int = 0            # a pin would have exceeded the budget
    pins_released_by_policy: int = 0  # e.g. InferCept chose discard or swap
    pins_dropped_program_end: int = 0
    pins_retimed: int = 0             # TTL re-decided after a shift of the tool's durations
    # why each completed turn was or was not pinned: {PIN_DECISIONS key: count}, every key
    # present from the start so that /metrics lists them all
    pin_decisions: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PIN_DECISIONS, 0))
    ttl_counts: list[int] = field(default_factory=lambda: [0] * len(TTL_BUCKETS_MS))
    ttl_sum: float = 0.0

    def observe_ttl(self, ttl: float) -> None:
        ms = ttl * 1000.0
        for i, b in enumerate(TTL_BUCKETS_MS):
            if ms <= b:
                self.ttl_counts[i] += 1
                break
        if math.isfinite(ttl):
            self.ttl_sum += ttl

    def pin_decision_counts(self) -> dict[str, int]:
        """``pin_decisions_<reason>_total`` for every reason (``PIN_DECISIONS``)."""
        return {f"pin_decisions_{r}_total": n for r, n in self.pin_decisions.items()}

    def ttl_histogram(self) -> dict[str, int]:
        """Cumulative counts of chosen TTLs: ``pin_ttl_ms_le_<bound>`` (Prometheus style)."""
        out, acc = {}, 0
        for b, c in zip(TTL_BUCKETS_MS, self.ttl_counts):
            acc += c
            out[f"pin_ttl_ms_le_{'inf' if math.isinf(b) else int(b)}"] = acc
        return out


def scheduler_stats(sch: "Scheduler", time_total: float = 0.0, time_max: float = 0.0) -> dict[str, float]:
    """The flat stats of one ``Scheduler`` (``LLMEngine.stats``, /metrics, bench reports, the
    simulators): names are stable, snake_case; ``_total`` suffix = monotonic counter.
    ``time_total``/``time_max``: wall seconds its caller spent in ``schedule``."""
    kv = sch.kv
    st = sch.stats
    c = kv.pool.counts()
    return {
        "num_requests_running": len(sch.running),
        "num_requests_waiting": len(sch.waiting),
        "kv_blocks_total": c["total"],
        "kv_blocks_in_use": c["in_use"],
        "kv_blocks_cached": c["cached"],
        "kv_usage": kv.usage,
        "prefix_cache_queries_total": kv.stats.queries,
        "prefix_cache_hits_total": kv.stats.hits,
        "kv_evictions_total": kv.pool.num_evictions,
        "preemptions_total": st.num_preemptions,
        "requests_finished_total": st.num_finished,
        "queueing_delay_seconds_total": st.total_queueing_delay,
        "admissions_total": st.num_admissions,
        "steps_total": st.num_steps,
        "prefix_cache_host_hits_total": kv.stats.host_hits,
        "swap_in_blocks_total": kv.stats.swap_in_blocks,
        "swap_out_blocks_total": kv.stats.swap_out_blocks,
        "host_kv_blocks_total": kv.host.num_blocks if kv.host is not None else 0,
        "host_kv_blocks_used": len(kv.host.lru) if kv.host is not None else 0,
        "pins_made_total": st.pins_made,
        "pins_hit_total": st.pins_hit,
        "pins_expired_total": st.pins_expired,
        "pins_force_released_total": st.pins_force_released,
        "pins_rejected_total": st.pins_rejected,
        "pins_released_by_policy_total": st.pins_released_by_policy,
        "pinned_programs": len(sch.agents.pins),
        "pinned_blocks": sch.agents.pins.pinned_blocks,
        "pins_dropped_program_end_total": st.pins_dropped_program_end,
        "pin_ttl_seconds_sum": st.ttl_sum,
        "pin_ttl_queue_delay_seconds": sch.agents.ctx.queue_delay.value,   # T of METHOD 2.2
        "pin_ttl_eta": sch.agents.ctx.eta.value,
        "tool_durations_seen_total": sch.agents.ctx.predictor.total_seen,
        **st.ttl_histogram(),
        **st.pin_decision_counts(),
        "programs_tracked": len(sch.agents.programs),
        "programs_forgotten_total": sch.agents.programs.num_forgotten,
        "tools_tracked": len(sch.agents.ctx.predictor.per_tool),
        "tools_evicted_total": sch.agents.ctx.predictor.num_tools_evicted,
        "tool_drift_detections_total": sch.agents.ctx.predictor.num_drift_detections,
        "pins_retimed_after_drift_total": st.pins_retimed,
        **sch.policy.stats(),
        "scheduler_time_seconds_total": time_total,
        "scheduler_time_seconds_max": time_max,
    }
