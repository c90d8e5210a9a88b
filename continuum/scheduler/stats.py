"""Scheduler counters and gauges (plain numbers; the engine flattens them into ``stats()``)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from continuum.scheduler.policy import PIN_DECISIONS

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
