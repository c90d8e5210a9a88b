"""The host-memory KV tier: an LRU pool of host blocks keyed by the same chained block hashes
as the device pool (METHOD 2.5). Pure bookkeeping: the cache engine owns the host tensors and
executes the copies the KV manager queues (swap-out: device -> host, swap-in: host -> device).

Invariants (``check_integrity``): every host block is either free or holds exactly one hash
in ``lru``; ``len(free) + len(lru) == num_blocks``. A host block that is the source of a
swap-in or the destination of a swap-out queued this step is locked: it is not reused until
``end_step()``, because one step's copies run as batches (swap-outs first, then swap-ins) and
a block written twice, or overwritten before it is read, in one batch would be corrupt.
"""
from __future__ import annotations

from collections import OrderedDict

from continuum.kv.block_pool import BlockHash


class HostBlockPool:
    def __init__(self, num_blocks: int):
        self.num_blocks = num_blocks
        self.free: list[int] = list(range(num_blocks - 1, -1, -1))   # pop() hands out 0 first
        self.lru: OrderedDict[BlockHash, int] = OrderedDict()        # hash -> host block id
        self.locked: set[int] = set()
        self.num_evictions = 0

    def snapshot(self) -> dict[str, float]:
        """The host tier's stats (``continuum.snapshot``): its size and the blocks holding KV."""
        return {"host_kv_blocks_total": self.num_blocks, "host_kv_blocks_used": len(self.lru)}

    def __contains__(self, block_hash: BlockHash) -> bool:
        return block_hash in self.lru

    def lookup(self, block_hash: BlockHash) -> int | None:
        """Host block holding this hash (marked most recently used), or None."""
        hid = self.lru.get(block_hash)
        if hid is not None:
            self.lru.move_to_end(block_hash)
        return hid

    def lock(self, host_id: int) -> None:
        self.locked.add(host_id)

    def end_step(self) -> None:
        self.locked.clear()

    def put(self, block_hash: BlockHash) -> int | None:
        """Reserve a host block for ``block_hash``. Returns the block to copy into, or None if
        the hash is already on the host (refreshed, nothing to copy) or no block is free or
        evictable (the KV is simply dropped)."""
        if block_hash in self.lru:
            self.lru.move_to_end(block_hash)
            return None
        if self.free:
            hid = self.free.pop()
        else:
            victim = next((h for h, i in self.lru.items() if i not in self.locked), None)
            if victim is None:
                return None
            hid = self.lru.pop(victim)
            self.num_evictions += 1
        self.lru[block_hash] = hid
        self.locked.add(hid)
        return hid

    def check_integrity(self) -> None:
        ids = list(self.free) + list(self.lru.values())
        assert len(ids) == len(set(ids)) == self.num_blocks, "host pool corrupt"
