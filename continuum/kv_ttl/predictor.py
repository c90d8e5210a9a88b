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
"""
from __future__ import annotations

import bisect
from collections import OrderedDict, deque

COLD, POOLED, TOOL = "cold", "pooled", "tool"
MAX_TOOL_NAME_CHARS = 128
MAX_TOOLS = 256


class _History:
    """A bounded FIFO of durations with a lazily re-sorted copy (sorted on first use after a
    change: at most once per turn finish, O(n log n) with n <= 4096)."""

    __slots__ = ("values", "_sorted", "total")

    def __init__(self, maxlen: int):
        self.values: deque[float] = deque(maxlen=maxlen)
        self._sorted: list[float] | None = []
        self.total = 0

    def add(self, d: float) -> None:
        self.values.append(d)
        self.total += 1
        self._sorted = None

    def sorted(self) -> list[float]:
        if self._sorted is None:
            self._sorted = sorted(self.values)
        return self._sorted

    def mean(self) -> float | None:
        return sum(self.values) / len(self.values) if self.values else None


def _key(tool: str | None) -> str | None:
    return None if tool is None else tool[:MAX_TOOL_NAME_CHARS]


class DurationPredictor:
    def __init__(self, k: int = 100, history: int = 4096, max_tools: int = MAX_TOOLS):
        self.k = k
        self.history = history
        self.max_tools = max_tools
        self.pooled = _History(history)
        self.per_tool: OrderedDict[str, _History] = OrderedDict()   # least recently observed first
        self.num_tools_evicted = 0

    def observe(self, tool: str, duration: float) -> None:
        d = max(0.0, float(duration))
        tool = _key(tool)
        h = self.per_tool.get(tool)
        if h is None:
            h = self.per_tool[tool] = _History(self.history)
            if len(self.per_tool) > self.max_tools:
                self.per_tool.popitem(last=False)
                self.num_tools_evicted += 1
        else:
            self.per_tool.move_to_end(tool)
        h.add(d)
        self.pooled.add(d)

    @property
    def total_seen(self) -> int:
        return self.pooled.total

    def snapshot(self) -> dict[str, float]:
        """The predictor's stats (``continuum.snapshot``): durations seen, tools tracked now
        and tools forgotten to stay under ``max_tools``."""
        return {"tool_durations_seen_total": self.total_seen, "tools_tracked": len(self.per_tool),
                "tools_evicted_total": self.num_tools_evicted}

    def level(self, tool: str | None) -> str:
        if self.pooled.total < self.k:
            return COLD
        h = self.per_tool.get(_key(tool)) if tool is not None else None
        if h is None or h.total < self.k:
            return POOLED
        return TOOL

    def samples(self, tool: str | None) -> list[float] | None:
        """Sorted durations defining P(tau, f), or None while cold."""
        lvl = self.level(tool)
        if lvl == COLD:
            return None
        return (self.pooled if lvl == POOLED else self.per_tool[_key(tool)]).sorted()

    def cdf(self, tool: str | None, tau: float) -> float:
        s = self.samples(tool)
        return bisect.bisect_right(s, tau) / len(s) if s else 0.0

    def mean(self, tool: str | None) -> float | None:
        """Mean of the tool's history, else of the pooled one, else None."""
        h = self.per_tool.get(_key(tool)) if tool is not None else None
        if h is not None and h.values:
            return h.mean()
        return self.pooled.mean()
