"""The scheduler layer's own counters (plain numbers), reported by ``SchedulerStats.snapshot``.

``Scheduler`` counts steps, admissions, preemptions and finishes here; ``AgentState`` (the
same layer) counts pins and pin decisions. Gauges and the lower layers' counters are not
here: each layer reports its own (``continuum.snapshot``)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from continuum.scheduler.policy import PIN_DECISIONS
from continuum.snapshot import compose

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

    def snapshot(self) -> dict[str, float]:
        """These counters under their stats names (``continuum.snapshot``); ``_total``: monotonic."""
        return compose({
            "preemptions_total": self.num_preemptions,
            "requests_finished_total": self.num_finished,
            "queueing_delay_seconds_total": self.total_queueing_delay,
            "admissions_total": self.num_admissions,
            "steps_total": self.num_steps,
            "pins_made_total": self.pins_made,
            "pins_hit_total": self.pins_hit,
            "pins_expired_total": self.pins_expired,
            "pins_force_released_total": self.pins_force_released,
            "pins_rejected_total": self.pins_rejected,
            "pins_released_by_policy_total": self.pins_released_by_policy,
            "pins_dropped_program_end_total": self.pins_dropped_program_end,
            "pin_ttl_seconds_sum": self.ttl_sum,
            "pins_retimed_after_drift_total": self.pins_retimed,
        }, self.ttl_histogram(), self.pin_decision_counts())

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
