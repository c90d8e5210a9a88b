"""The pin table: KV blocks held for programs paused on a tool call (METHOD 2.1).

A pin is bookkeeping only: the KV manager holds the block references under the pin's key
(``KVCacheManager.pin_blocks``); this table knows which program owns them, when they expire,
and in which order to give them up. At most one pin per program.

Invariants:
- ``pinned_blocks == sum(len(p.block_ids) for p in pins)`` and it never exceeds ``budget``
  (a pin that would is not made: ``fits``). A block shared by two pins counts twice, which
  only makes the budget conservative.
- A pin's expiry is ``created + ttl``; ``retime`` changes the TTL (after a detected shift of
  its tool's durations) and the heap entry of the old expiry is then skipped as stale.
- Victim order under memory pressure: latest program arrival first (the newest program has
  the least invested and, under program FCFS, the furthest-away turn).
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass


@dataclass
class Pin:
    program_id: str
    request_id: str              # the finished turn whose blocks are held
    block_ids: list[int]
    created: float
    ttl: float                   # math.inf: held until released by a rule (InferCept preserve)
    program_arrival: float       # program's first arrival: the victim order
    seq: int                     # tie-breaker: creation order
    tool: str | None = None      # the tool the program is waiting on (drift re-times its pins)
    context_tokens: int = 0      # the turn's computed tokens (what the TTL was priced on)
    retimed: bool = False        # its TTL was re-decided after a drift (it may then be 0)

    @property
    def expires_at(self) -> float:
        return self.created + self.ttl

    @property
    def key(self) -> str:
        return self.key_of(self.program_id)

    @staticmethod
    def key_of(program_id: str) -> str:
        """The KV manager's holder key of this program's pin."""
        return f"pin:{program_id}"


class PinTable:
    def __init__(self, budget_blocks: int):
        self.budget = budget_blocks
        self.pins: dict[str, Pin] = {}
        self.pinned_blocks = 0
        self._seq = 0
        # Expiry without scanning every pin each step: a heap of (expires_at, seq, program),
        # stale entries skipped by seq; pins found expired stay in ``_due`` (in expiry order)
        # until removed, since one whose follow-up waits is kept.
        self._heap: list[tuple[float, int, str]] = []
        self._due: dict[str, None] = {}

    def __len__(self) -> int:
        return len(self.pins)

    def __contains__(self, program_id: str) -> bool:
        return program_id in self.pins

    def get(self, program_id: str) -> Pin | None:
        return self.pins.get(program_id)

    def snapshot(self) -> dict[str, float]:
        """The pin table's gauges (``continuum.snapshot``): programs and blocks pinned now."""
        return {"pinned_programs": len(self.pins), "pinned_blocks": self.pinned_blocks}

    def fits(self, num_blocks: int) -> bool:
        return self.pinned_blocks + num_blocks <= self.budget

    def add(self, program_id: str, request_id: str, block_ids: list[int], now: float, ttl: float,
            program_arrival: float, tool: str | None = None, context_tokens: int = 0) -> Pin:
        assert program_id not in self.pins, f"program {program_id} is already pinned"
        assert self.fits(len(block_ids)), "pin budget exceeded"
        self._seq += 1
        pin = Pin(program_id, request_id, list(block_ids), now, ttl, program_arrival, self._seq,
                  tool, context_tokens)
        self.pins[program_id] = pin
        self.pinned_blocks += len(block_ids)
        if math.isfinite(ttl):
            heapq.heappush(self._heap, (pin.expires_at, pin.seq, program_id))
        return pin

    def remove(self, program_id: str) -> Pin:
        pin = self.pins.pop(program_id)
        self.pinned_blocks -= len(pin.block_ids)
        self._due.pop(program_id, None)
        return pin

    def retime(self, program_id: str, ttl: float) -> Pin:
        """Give a pin a new TTL, counted from its creation (what it would have been given had
        the new duration distribution been known then): a shorter one can make it due at once."""
        assert ttl >= 0 and not math.isnan(ttl), f"bad ttl {ttl}"
        pin = self.pins[program_id]
        pin.ttl, pin.retimed = ttl, True
        self._due.pop(program_id, None)
        if math.isfinite(ttl):
            heapq.heappush(self._heap, (pin.expires_at, pin.seq, program_id))
        return pin

    def expired(self, now: float) -> list[Pin]:
        """Pins whose TTL has run out at ``now``, in expiry order (the caller keeps those whose
        follow-up waits; they are returned again at every call until removed)."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            exp, seq, pid = heapq.heappop(heap)
            p = self.pins.get(pid)
            if p is not None and p.seq == seq and p.expires_at == exp:   # else stale (retimed)
                self._due[pid] = None
        return [self.pins[pid] for pid in self._due]

    def victims(self, exclude: str | None = None) -> list[Pin]:
        """Pins in forced-release order: latest program arrival first (then newest pin)."""
        return sorted((p for p in self.pins.values() if p.program_id != exclude),
                      key=lambda p: (-p.program_arrival, -p.seq))

    def check(self) -> None:
        assert self.pinned_blocks == sum(len(p.block_ids) for p in self.pins.values())
        assert self.pinned_blocks <= self.budget or not self.pins
        assert all(p.ttl >= 0 and not math.isnan(p.ttl) for p in self.pins.values())
