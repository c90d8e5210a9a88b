"""The block pool: KV block ids, ref counts, chained block hashes, and the LRU free queue.

Pure bookkeeping (no torch, no clock). A block is in exactly one of three states:

- in use:  ``ref_cnt > 0``; not in the free queue.
- cached:  ``ref_cnt == 0`` with a block hash; in the free queue and in the hash map, so a
           later request with the same prefix can take it back (``touch``) until it is evicted.
- free:    ``ref_cnt == 0`` without a hash; in the free queue.

``free + cached + in_use == num_blocks`` always (``check_integrity``). New blocks come from the
head of the free queue (evicting a cached block drops its hash); freed blocks go to the tail,
so the free queue is an LRU of cached blocks. Callers free a request's blocks tail-first, so
the last blocks of a sequence (least likely to be shared) are evicted first.

Block hashes are SHA-256 digests chained from block to block (``hash_block``): a hit is
trusted without comparing tokens, so equal keys must mean equal prefixes even when a client
crafts its prompts to collide with another's (a language's built-in hash can be collided
offline; vLLM's GHSA-rm76-4mrf-v9r8).

The state counts are kept incrementally (``counts()`` is O(1): /metrics calls it on the
engine thread); ``check_integrity`` compares them with a full walk.
"""
from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Sequence

BlockHash = bytes


class KVBlock:
    __slots__ = ("block_id", "ref_cnt", "block_hash", "prev", "next")

    def __init__(self, block_id: int):
        self.block_id = block_id
        self.ref_cnt = 0
        self.block_hash: BlockHash | None = None
        self.prev: KVBlock | None = None
        self.next: KVBlock | None = None

    def __repr__(self) -> str:
        h = self.block_hash.hex()[:12] if self.block_hash is not None else None
        return f"KVBlock({self.block_id}, ref={self.ref_cnt}, hash={h})"


class FreeBlockQueue:
    """Doubly linked list of blocks with O(1) popleft, append and remove-from-middle."""

    def __init__(self, blocks: Iterable[KVBlock]):
        self._head = KVBlock(-1)
        self._tail = KVBlock(-1)
        self._head.next, self._tail.prev = self._tail, self._head
        self.num_free = 0
        for b in blocks:
            self.append(b)

    def popleft(self) -> KVBlock:
        b = self._head.next
        if b is self._tail:
            raise ValueError("no free blocks")
        self.remove(b)
        return b

    def remove(self, b: KVBlock) -> None:
        b.prev.next, b.next.prev = b.next, b.prev
        b.prev = b.next = None
        self.num_free -= 1

    def append(self, b: KVBlock) -> None:
        last = self._tail.prev
        last.next, b.prev, b.next, self._tail.prev = b, last, self._tail, b
        self.num_free += 1

    def __iter__(self):
        b = self._head.next
        while b is not self._tail:
            yield b
            b = b.next

    def block_ids(self) -> list[int]:
        return [b.block_id for b in self]


# Parent key of an unsalted request's first block.
NONE_HASH: BlockHash = hashlib.sha256(b"continuum prefix cache root").digest()
# Messages hashed for a salted root start with these 32 zero bytes; every block message starts
# with its parent key, a SHA-256 digest, which is never all zeros (that would be a preimage),
# so no salt can make its root equal to any block's key.
_SALT_DOMAIN = bytes(32)
_PACKERS: dict[int, struct.Struct] = {}     # block length -> its token-id encoder


def _packer(num_tokens: int) -> struct.Struct:
    """The (cached) encoder of ``num_tokens`` token ids as little-endian int64s: a fixed
    width, so no two token sequences share an encoding."""
    packer = _PACKERS[num_tokens] = struct.Struct(f"<{num_tokens}q")
    return packer


def root_hash(cache_salt: str | None) -> BlockHash:
    """Parent key of a request's first block: ``NONE_HASH``, or a digest of its cache salt, so
    that requests with different salts share no block and equal salts share as usual."""
    if cache_salt is None:
        return NONE_HASH
    return hashlib.sha256(_SALT_DOMAIN + cache_salt.encode()).digest()


def hash_block(parent_hash: BlockHash | None, token_ids: Sequence[int]) -> BlockHash:
    """Key of one full block: SHA-256 of (parent key, token ids), so equal keys mean equal
    prefixes, from the first block's parent on (``root_hash``; None: ``NONE_HASH``).
    Deterministic across processes and runs."""
    packer = _PACKERS.get(len(token_ids)) or _packer(len(token_ids))
    parent = NONE_HASH if parent_hash is None else parent_hash
    return hashlib.sha256(parent + packer.pack(*token_ids)).digest()


class BlockPool:
    """Owns every KV block. Invariant checked by ``check_integrity``."""

    def __init__(self, num_blocks: int, enable_caching: bool = True):
        if num_blocks < 1:
            raise ValueError("the KV pool needs at least one block")
        self.num_blocks = num_blocks
        self.enable_caching = enable_caching
        self.blocks = [KVBlock(i) for i in range(num_blocks)]
        self.free_queue = FreeBlockQueue(self.blocks)
        self.cached: dict[BlockHash, KVBlock] = {}     # block hash -> block holding it
        # Blocks in the cached state (ref 0, hashed, in the free queue). In use is
        # ``num_blocks - num_free_blocks`` (a block is in the queue iff its ref count is 0).
        self.num_cached_blocks = 0
        self.num_evictions = 0
        self.num_allocated = 0          # blocks taken from the free queue's head, ever
        # (block id, hash) of cached blocks evicted since the last drain; recorded only when a
        # host tier wants them (their KV is still intact until this step's forward pass).
        self.record_evictions = False
        self.evicted: list[tuple[int, BlockHash]] = []

    # -- queries ---------------------------------------------------------------------------
    @property
    def num_free_blocks(self) -> int:
        """Blocks that can be handed out now (free or cached-but-unreferenced)."""
        return self.free_queue.num_free

    @property
    def usage(self) -> float:
        return 1.0 - self.num_free_blocks / self.num_blocks

    def get_cached_block(self, block_hash: BlockHash) -> KVBlock | None:
        return self.cached.get(block_hash)

    # -- transitions -----------------------------------------------------------------------
    def get_new_blocks(self, n: int) -> list[KVBlock]:
        """Take n blocks from the free queue's head (LRU end), evicting cached ones."""
        if n > self.free_queue.num_free:
            raise ValueError(f"asked for {n} blocks, {self.free_queue.num_free} free")
        out = []
        self.num_allocated += n
        for _ in range(n):
            b = self.free_queue.popleft()
            if b.block_hash is not None:
                self.num_cached_blocks -= 1
                self._evict(b)
            b.ref_cnt = 1
            out.append(b)
        return out

    def _evict(self, b: KVBlock) -> None:
        if self.cached.get(b.block_hash) is b:
            del self.cached[b.block_hash]
        if self.record_evictions:
            self.evicted.append((b.block_id, b.block_hash))
        b.block_hash = None
        self.num_evictions += 1

    def touch(self, blocks: Iterable[KVBlock]) -> None:
        """Take a reference on blocks found by prefix match (pulls cached ones out of the queue)."""
        for b in blocks:
            if b.ref_cnt == 0:
                self.free_queue.remove(b)
                if b.block_hash is not None:
                    self.num_cached_blocks -= 1
            b.ref_cnt += 1

    def free_blocks(self, ordered: Iterable[KVBlock]) -> None:
        """Drop one reference each; blocks reaching zero join the free queue's tail in the given
        order (pass a request's blocks reversed: its tail is then evicted first)."""
        for b in ordered:
            b.ref_cnt -= 1
            assert b.ref_cnt >= 0, f"double free of {b}"
            if b.ref_cnt == 0:
                self.free_queue.append(b)
                if b.block_hash is not None:
                    self.num_cached_blocks += 1

    def cache_block(self, b: KVBlock, block_hash: BlockHash) -> None:
        """Register a just-filled block under its hash (first writer wins: a duplicate block
        keeps no hash and returns to plain free when released)."""
        if not self.enable_caching or b.block_hash is not None:
            return
        if block_hash in self.cached:
            return
        b.block_hash = block_hash
        self.cached[block_hash] = b
        if b.ref_cnt == 0:           # hashed while in the free queue: now cached, not free
            self.num_cached_blocks += 1

    def uncache_block(self, b: KVBlock) -> None:
        """Drop the block's hash so no later request can hit it (its KV is not what the hash
        says: the step meant to write it failed). The block's references are untouched."""
        if b.block_hash is None:
            return
        if self.cached.get(b.block_hash) is b:
            del self.cached[b.block_hash]
        b.block_hash = None
        if b.ref_cnt == 0:           # was cached in the free queue: now plain free
            self.num_cached_blocks -= 1

    def reset_prefix_cache(self) -> bool:
        """Drop every cached hash; only allowed when no block is in use."""
        if self.free_queue.num_free != self.num_blocks:
            return False
        for b in self.blocks:
            b.block_hash = None
        self.cached.clear()
        self.num_cached_blocks = 0
        return True

    # -- integrity -------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        """Blocks per state, O(1) (from the incremental counters)."""
        in_queue, cached = self.free_queue.num_free, self.num_cached_blocks
        return {"free": in_queue - cached, "cached": cached, "in_use": self.num_blocks - in_queue,
                "total": self.num_blocks}

    def snapshot(self) -> dict[str, float]:
        """The pool's stats (``continuum.snapshot``), O(1): blocks per state, usage, evictions."""
        c = self.counts()
        return {"kv_blocks_total": c["total"], "kv_blocks_in_use": c["in_use"],
                "kv_blocks_cached": c["cached"], "kv_usage": self.usage,
                "kv_evictions_total": self.num_evictions}

    def walk_counts(self) -> dict[str, int]:
        """``counts()`` recomputed by walking the free queue and every block (for checks)."""
        in_queue = list(self.free_queue)
        cached = sum(1 for b in in_queue if b.block_hash is not None)
        in_use = sum(1 for b in self.blocks if b.ref_cnt > 0)
        return {"free": len(in_queue) - cached, "cached": cached, "in_use": in_use,
                "total": self.num_blocks}

    def check_integrity(self) -> None:
        """Raise AssertionError if bookkeeping is inconsistent."""
        in_queue = list(self.free_queue)
        ids = {b.block_id for b in in_queue}
        assert len(ids) == len(in_queue) == self.free_queue.num_free, "free queue corrupt"
        for b in self.blocks:
            assert b.ref_cnt >= 0, f"negative ref count {b}"
            assert (b.ref_cnt == 0) == (b.block_id in ids), f"{b} ref count disagrees with queue"
            if b.block_hash is not None:
                assert self.cached.get(b.block_hash) is b, f"{b} hash not in map"
        for h, b in self.cached.items():
            assert b.block_hash == h, f"map entry {h.hex()} points at {b}"
        c = self.walk_counts()
        assert c["free"] + c["cached"] + c["in_use"] == c["total"], c
        assert self.counts() == c, f"incremental counts {self.counts()} != walk {c}"
