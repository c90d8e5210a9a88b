"""The one stats interface: each layer reports its own counters and gauges as ``snapshot()``.

A snapshot is a flat ``dict[str, float]`` (ints allowed) with stable snake_case keys; a key
ending in ``_total`` is a monotonic counter, anything else a gauge (``_sum`` and the
``pin_ttl_ms_le_*`` buckets are monotonic too, see docs/server.md). Layers compose upward
with ``compose``: the block pool's and host pool's into the KV manager's, the pin table's,
program table's and predictor's into ``AgentState``'s, those and the policy's into the
``Scheduler``'s, and that plus the schedule timer into ``LLMEngine.stats()`` (what /metrics,
bench reports and the Ray client read) or a simulated replica's ``snapshot()`` (what the
simulators report). Each fact has one owner: a key reported by two layers is a bug, and
``compose`` raises on it.

Invariant: ``snapshot()`` is O(1) in the KV pool's size (it is called on the engine thread for
every /metrics scrape): layers keep their counts incrementally and never walk their blocks.
"""
from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Protocol

Snapshot = dict[str, float]


class Reporter(Protocol):
    """A layer that reports its counters: ``snapshot()`` returns a fresh flat dict."""

    def snapshot(self) -> Snapshot: ...


def compose(*parts: Mapping[str, float]) -> Snapshot:
    """The union of layers' snapshots, in order. Raises ``ValueError`` when two parts report
    the same key (each fact has one source; a clash means two layers count one thing)."""
    out: Snapshot = {}
    for part in parts:
        clash = out.keys() & part.keys()
        if clash:
            raise ValueError(f"stats keys reported by two layers: {sorted(clash)}")
        out.update(part)
    return out


class CallTimer:
    """Wall seconds its owner spends in one kind of call (total and the longest), reported as
    ``<name>_seconds_total`` / ``<name>_seconds_max``. The engine and the simulated replicas
    time ``Scheduler.schedule`` with it: the scheduler itself reads no clock."""

    def __init__(self, name: str):
        self.total_key, self.max_key = f"{name}_seconds_total", f"{name}_seconds_max"
        self.total = 0.0
        self.max = 0.0

    @contextmanager
    def timed(self) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            dt = time.perf_counter() - t0
            self.total += dt
            self.max = max(self.max, dt)

    def snapshot(self) -> Snapshot:
        return {self.total_key: self.total, self.max_key: self.max}
