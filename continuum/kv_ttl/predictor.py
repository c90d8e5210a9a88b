"""Tool-duration history and the CDF the TTL solver uses (METHOD 2.2, 2.3).

Durations are measured server-side by the scheduler: the arrival of a program's next
request minus the finish time of its previous turn. History is bounded: the last
``history`` (4096) durations per tool and the last ``history`` over all tools (pooled).

Memory is bounded too, since tool names come from clients (hints) and model output (parsed):
names are cut to ``MAX_TOOL_NAME_CHARS`` and at most ``max_tools`` tools keep a history; past
that, the tool observed least recently is forgotten (``num_tools_evicted``).

Cold start has three levels, decided by ``level(tool)``:
- ``COLD``:   fewer than K (100) durations seen in total: the caller uses the closed form
              under an exponential prior (``ttl.cold_start_ttl``).
- ``POOLED``: K seen in total but fewer than K for this tool: the pooled CDF.
- ``TOOL``:   the tool's own CDF.

Drift (``kv_ttl/drift.py``): after each duration the tool's last 32 and last 128 durations are
tested against the rest of its history (two-sample KS at a distribution-free threshold). On a
detected shift the history is *reset* to the durations after the estimated change point, and
the tool's older durations leave the pooled history too, so the next TTL is the one the new
regime alone gives (``observe`` returns True; ``num_drift_detections`` and the tool's
``drifts`` count them). A tool keeps its level: ``level`` counts every duration ever seen.
"""
from __future__ import annotations

import bisect
from collections import OrderedDict, deque

from continuum.kv_ttl import drift

COLD, POOLED, TOOL = "cold", "pooled", "tool"
MAX_TOOL_NAME_CHARS = 128
MAX_TOOLS = 256


class _History:
    """A bounded FIFO of durations and the same durations kept sorted (insert and evict by
    bisection: O(log n) search plus a memmove, so the change-point test can run on every
    observation). Entries carry a tag ``(tool, observation number)``: the same tag in the tool's
    history and in the pooled one, so that a tool's stale durations can be dropped from both."""

    __slots__ = ("values", "tags", "_sorted", "total", "maxlen", "drifts")

    def __init__(self, maxlen: int):
        self.maxlen = maxlen
        self.values: deque[float] = deque()
        self.tags: deque[tuple[str, int] | None] = deque()
        self._sorted: list[float] = []
        self.total = 0              # durations ever added (a reset does not lower it)
        self.drifts = 0             # shifts detected (per-tool histories)

    def add(self, d: float, tag: tuple[str, int] | None = None) -> None:
        if len(self.values) == self.maxlen:
            old = self.values.popleft()
            self.tags.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, old)]
        self.values.append(d)
        self.tags.append(tag)
        bisect.insort(self._sorted, d)
        self.total += 1

    def sorted(self) -> list[float]:
        """The durations in ascending order (the caller must not mutate it)."""
        return self._sorted

    def keep(self, keep: list[bool]) -> None:
        """Keep the entries whose flag (in FIFO order) is True."""
        pairs = [(v, t) for v, t, k in zip(self.values, self.tags, keep) if k]
        self.values = deque(v for v, _ in pairs)
        self.tags = deque(t for _, t in pairs)
        self._sorted = sorted(self.values)

    def mean(self) -> float | None:
        return sum(self.values) / len(self.values) if self.values else None


def tool_key(tool: str | None) -> str | None:
    """The name a tool's history is kept under (cut to ``MAX_TOOL_NAME_CHARS``)."""
    return None if tool is None else tool[:MAX_TOOL_NAME_CHARS]


class DurationPredictor:
    def __init__(self, k: int = 100, history: int = 4096, max_tools: int = MAX_TOOLS):
        self.k = k
        self.history = history
        self.max_tools = max_tools
        self.pooled = _History(history)
        self.per_tool: OrderedDict[str, _History] = OrderedDict()   # least recently observed first
        self.num_tools_evicted = 0
        self.num_drift_detections = 0      # over all tools, evicted ones included
        self._seq = 0                      # observations numbered, for the history tags

    def observe(self, tool: str, duration: float) -> bool:
        """Record a duration; True if it revealed a shift of the tool's distribution (the
        tool's history then holds only the durations after the estimated change point)."""
        d = max(0.0, float(duration))
        tool = tool_key(tool)
        h = self.per_tool.get(tool)
        if h is None:
            h = self.per_tool[tool] = _History(self.history)
            if len(self.per_tool) > self.max_tools:
                self.per_tool.popitem(last=False)
                self.num_tools_evicted += 1
        else:
            self.per_tool.move_to_end(tool)
        self._seq += 1
        h.add(d, (tool, self._seq))
        self.pooled.add(d, (tool, self._seq))
        return self._check_drift(tool, h)

    def _check_drift(self, tool: str, h: _History) -> bool:
        window = drift.shifted_window(h.sorted(), reversed(h.values))
        if window is None:
            return False
        keep_last = drift.change_point(h.sorted(), window)
        n = len(h.values)
        first_new = h.tags[n - keep_last][1]      # observation number of the change point
        h.keep([i >= n - keep_last for i in range(n)])
        self.pooled.keep([t is None or t[0] != tool or t[1] >= first_new for t in self.pooled.tags])
        h.drifts += 1
        self.num_drift_detections += 1
        return True

    def drift_counts(self) -> dict[str, int]:
        """Shifts detected per tool still tracked (tools with none are left out)."""
        return {t: h.drifts for t, h in self.per_tool.items() if h.drifts}

    @property
    def total_seen(self) -> int:
        return self.pooled.total

    def snapshot(self) -> dict[str, float]:
        """The predictor's stats (``continuum.snapshot``): durations seen, tools tracked now
        tools forgotten to stay under ``max_tools``, and shifts detected (``kv_ttl/drift.py``)."""
        return {"tool_durations_seen_total": self.total_seen, "tools_tracked": len(self.per_tool),
                "tools_evicted_total": self.num_tools_evicted,
                "tool_drift_detections_total": self.num_drift_detections}

    def level(self, tool: str | None) -> str:
        if self.pooled.total < self.k:
            return COLD
        h = self.per_tool.get(tool_key(tool)) if tool is not None else None
        if h is None or h.total < self.k:
            return POOLED
        return TOOL

    def samples(self, tool: str | None) -> list[float] | None:
        """Sorted durations defining P(tau, f), or None while cold."""
        lvl = self.level(tool)
        if lvl == COLD:
            return None
        return (self.pooled if lvl == POOLED else self.per_tool[tool_key(tool)]).sorted()

    def cdf(self, tool: str | None, tau: float) -> float:
        s = self.samples(tool)
        return bisect.bisect_right(s, tau) / len(s) if s else 0.0

    def mean(self, tool: str | None) -> float | None:
        """Mean of the tool's history, else of the pooled one, else None."""
        h = self.per_tool.get(tool_key(tool)) if tool is not None else None
        if h is not None and h.values:
            return h.mean()
        return self.pooled.mean()
