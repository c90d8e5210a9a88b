"""How long the prefix cache keeps a block that is freed now: the *eviction horizon*.

Freed blocks join the tail of the free queue and new blocks are taken from its head, so a
block freed now is evicted once every block ahead of it has been taken: after about

    H = blocks in the free queue / rate at which blocks are taken

seconds. The rate is an exponentially weighted moving average over ``time_constant``
seconds of the blocks handed out (``BlockPool.num_allocated``), on the scheduler's clock.

With a host tier of B blocks an evicted block is written there and leaves it about B
evictions later, so a freed block's KV stays *somewhere* (on the device, or a reload away)
for ``seconds_with(B)``. The door gates on that (past it a return costs a recompute, before
it only a reload); pins keep the device H, since a pin saves the reload too.

H is what a pin or a reservation is measured against: a program whose tool call ends within H
finds its KV in the cache without any help (below the cliff H is minutes, and holding memory
buys nothing); only calls longer than H need a pin, and a door is needed only when H falls
below the time programs spend between turns. ``math.inf`` while nothing is being allocated.
"""
from __future__ import annotations

import math


class EvictionHorizon:
    def __init__(self, time_constant: float = 10.0):
        self.time_constant = time_constant
        self.rate = 0.0                  # blocks allocated per second (EWMA)
        self._t: float | None = None
        self._allocated = 0
        self._free = 0

    def update(self, now: float, allocated_total: int, num_free: int) -> None:
        """Record the pool's counters at ``now`` (call once per scheduler step)."""
        self._free = num_free
        if self._t is None:
            self._t, self._allocated = now, allocated_total
            return
        dt = now - self._t
        if dt <= 0:
            return
        # Continuous-time EWMA of an impulse train: decay the rate, add the new blocks.
        self.rate = self.rate * math.exp(-dt / self.time_constant) \
            + (allocated_total - self._allocated) / self.time_constant
        self._t, self._allocated = now, allocated_total

    @property
    def seconds(self) -> float:
        return self.seconds_with(0)

    def seconds_with(self, behind: int) -> float:
        """H when ``behind`` more blocks keep a block after the free queue has evicted it: a
        host tier of that many blocks, into which every evicted block is written and which
        drops its least recent block per block written (LRU), at the same rate."""
        return (self._free + behind) / self.rate if self.rate > 1e-9 else math.inf
