"""Per-request block tables, prefix matching, pins and the host tier on top of the block pool
(no torch, no clock).

Life of a request's blocks:
1. ``get_computed_blocks(req)``: the longest run of its full blocks cached on the device
   (prefix hit); ``get_host_hits(req, n)``: the run continued from the host tier.
2. ``allocate_slots(req, n, hit_blocks, host_hits)``: take the hit blocks, allocate device
   blocks for the host hits (queued swap-ins) and fresh blocks so that
   ``num_computed_tokens + n`` tokens fit, and register every block that becomes full.
3. ``free(req)``: release its blocks tail-first (they stay cached for later hits), or
   ``pin_blocks(req, key)``: hand its full-block references to a pin held under ``key``
   (no ref count changes), released later by ``unpin(key)``.

Holders of references: request block tables and pins. ``check_integrity`` asserts every
block's ref count equals its number of holders. With a host tier, a cached device block that
is evicted is queued for swap-out (device -> host) before its memory is reused; the executor
runs a step's swap-outs, then its swap-ins, then the forward pass.
"""
from __future__ import annotations

from dataclasses import dataclass

from continuum.kv.block_pool import BlockHash, BlockPool, KVBlock, hash_block, root_hash
from continuum.kv.host_pool import HostBlockPool
from continuum.request import Request
from continuum.snapshot import compose


@dataclass
class PrefixCacheStats:
    queries: int = 0     # prompt tokens looked up
    hits: int = 0        # of which found cached (device or host)
    host_hits: int = 0   # of which reloaded from the host tier
    requests: int = 0
    swap_in_blocks: int = 0
    swap_out_blocks: int = 0

    @property
    def hit_rate(self) -> float:
        return self.hits / self.queries if self.queries else 0.0


class KVCacheManager:
    def __init__(self, num_blocks: int, block_size: int = 16, enable_caching: bool = True,
                 num_host_blocks: int = 0):
        self.block_size = block_size
        self.enable_caching = enable_caching
        self.pool = BlockPool(num_blocks, enable_caching)
        self.req_to_blocks: dict[str, list[KVBlock]] = {}
        self.req_to_block_ids: dict[str, list[int]] = {}     # the same tables as ids
        self._num_registered: dict[str, int] = {}            # leading blocks already hashed
        self.pinned: dict[str, list[KVBlock]] = {}
        self.stats = PrefixCacheStats()
        self.host = HostBlockPool(num_host_blocks) if num_host_blocks > 0 and enable_caching else None
        self.pool.record_evictions = self.host is not None
        self.swap_out_ops: list[tuple[int, int]] = []   # (device block, host block), this step
        self.swap_in_ops: list[tuple[int, int]] = []    # (host block, device block), this step

    @property
    def num_free_blocks(self) -> int:
        return self.pool.num_free_blocks

    @property
    def usage(self) -> float:
        return self.pool.usage

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def update_block_hashes(self, req: Request) -> list[BlockHash]:
        """Extend ``req.block_hashes`` to cover every full block of its known tokens (the
        first block's key includes the request's cache salt, and so every later one)."""
        bs, hashes, toks = self.block_size, req.block_hashes, req.all_token_ids
        start, end = len(hashes) * bs, len(toks) // bs * bs
        if start < end:
            parent = hashes[-1] if hashes else root_hash(req.cache_salt)
            for i in range(start, end, bs):
                parent = hash_block(parent, toks[i:i + bs])
                hashes.append(parent)
        return hashes

    def get_computed_blocks(self, req: Request) -> tuple[list[KVBlock], int]:
        """Device blocks matching the request's prefix and the number of tokens they cover.

        At least one token is always left to compute (its logits are needed), so a full hit
        of a block-aligned prompt gives back all but the last block.
        """
        if not self.enable_caching:
            return [], 0
        hashes = self.update_block_hashes(req)
        max_blocks = (req.num_tokens - 1) // self.block_size
        hit: list[KVBlock] = []
        for h in hashes[:max_blocks]:
            b = self.pool.get_cached_block(h)
            if b is None:
                break
            hit.append(b)
        return hit, len(hit) * self.block_size

    def get_host_hits(self, req: Request, num_device_hit_blocks: int) -> list[int]:
        """Host blocks continuing the device hit (same limit: one token left to compute)."""
        if self.host is None:
            return []
        max_blocks = (req.num_tokens - 1) // self.block_size
        out = []
        for h in req.block_hashes[num_device_hit_blocks:max_blocks]:
            hid = self.host.lookup(h)
            if hid is None:
                break
            out.append(hid)
        return out

    def record_lookup(self, req: Request, num_hit_tokens: int, num_host_hit_tokens: int = 0) -> None:
        self.stats.requests += 1
        self.stats.queries += req.num_tokens
        self.stats.hits += num_hit_tokens + num_host_hit_tokens
        self.stats.host_hits += num_host_hit_tokens

    def can_fit(self, req: Request, num_new_tokens: int, hit_blocks: list[KVBlock] = ()) -> bool:
        return self._num_blocks_needed(req, num_new_tokens, hit_blocks) is not None

    def _num_blocks_needed(self, req, num_new_tokens, hit_blocks, num_host_hits: int = 0) -> int | None:
        have = self.req_to_blocks.get(req.request_id, [])
        total = req.num_computed_tokens + (len(hit_blocks) + num_host_hits) * self.block_size + num_new_tokens
        need = self.blocks_for(total) - len(have) - len(hit_blocks)
        # Hit blocks sitting in the free queue stop being allocatable once we take them.
        reclaim = sum(1 for b in hit_blocks if b.ref_cnt == 0)
        if max(need, 0) + reclaim > self.pool.num_free_blocks:
            return None
        return max(need, 0)

    def allocate_slots(self, req: Request, num_new_tokens: int, hit_blocks: list[KVBlock] = (),
                       host_hits: list[int] = ()) -> list[KVBlock] | None:
        """Make room for ``num_new_tokens`` more tokens after the computed ones (and after the
        prefix-hit blocks, which are taken first, and the host hits, which are swapped in).
        Returns the new blocks, or None (and changes nothing) when the pool cannot supply them."""
        rid = req.request_id
        if not hit_blocks and not host_hits and rid in self.req_to_blocks:
            # Fast path (most decode steps): the tokens fit in the blocks the request has and
            # fill no new block, so there is nothing to allocate or register.
            total = req.num_computed_tokens + num_new_tokens
            if (total <= len(self.req_to_blocks[rid]) * self.block_size
                    and (not self.enable_caching or total // self.block_size <= self._num_registered.get(rid, 0))):
                return []
        need = self._num_blocks_needed(req, num_new_tokens, hit_blocks, len(host_hits))
        if need is None:
            return None
        blocks = self.req_to_blocks.setdefault(rid, [])
        ids = self.req_to_block_ids.setdefault(rid, [])
        if hit_blocks:
            self.pool.touch(hit_blocks)
            blocks.extend(hit_blocks)
            ids.extend(b.block_id for b in hit_blocks)
        for hid in host_hits:          # keep the sources alive while evictions refill the host
            self.host.lock(hid)
        new = self.pool.get_new_blocks(need)
        self._drain_evictions()
        hashes = self.update_block_hashes(req) if self.enable_caching else []
        first = len(blocks)
        for i, hid in enumerate(host_hits):
            self.pool.cache_block(new[i], hashes[first + i])
            self.swap_in_ops.append((hid, new[i].block_id))
        self.stats.swap_in_blocks += len(host_hits)
        blocks.extend(new)
        if new:
            ids.extend(b.block_id for b in new)
        if self.enable_caching:
            # Blocks full once this step's tokens are written can be found by later requests:
            # their token ids are known now and the KV is written before anyone reads it.
            # Only blocks past those registered by earlier calls are visited (a decode step
            # is O(1), not O(blocks)).
            n_after = (req.num_computed_tokens + (len(hit_blocks) + len(host_hits)) * self.block_size
                       + num_new_tokens)
            n_full = min(n_after // self.block_size, len(hashes))
            start = self._num_registered.get(rid, 0)
            for i in range(start, n_full):
                if blocks[i].block_hash is None:
                    self.pool.cache_block(blocks[i], hashes[i])
            if n_full > start:
                self._num_registered[rid] = n_full
        return new

    def _drain_evictions(self) -> None:
        """Queue a swap-out for every cached block just evicted (its KV is still intact)."""
        if self.host is None or not self.pool.evicted:
            return
        for block_id, h in self.pool.evicted:
            hid = self.host.put(h)
            if hid is not None:
                self.swap_out_ops.append((block_id, hid))
                self.stats.swap_out_blocks += 1
        self.pool.evicted.clear()

    def swap_out(self, blocks: list[KVBlock]) -> int:
        """Copy these (hashed) device blocks to the host now; returns how many were queued."""
        if self.host is None:
            return 0
        n = 0
        for b in blocks:
            if b.block_hash is not None:
                hid = self.host.put(b.block_hash)
                if hid is not None:
                    self.swap_out_ops.append((b.block_id, hid))
                    n += 1
        self.stats.swap_out_blocks += n
        return n

    def snapshot(self) -> dict[str, float]:
        """The KV layer's stats (``continuum.snapshot``): the block pool's, the prefix-cache
        and swap counters, and the host tier's (zeros without one)."""
        st = self.stats
        host = self.host if self.host is not None else HostBlockPool(0)    # no tier: all zeros
        return compose(self.pool.snapshot(), {
            "prefix_cache_queries_total": st.queries,
            "prefix_cache_hits_total": st.hits,
            "prefix_cache_host_hits_total": st.host_hits,
            "swap_in_blocks_total": st.swap_in_blocks,
            "swap_out_blocks_total": st.swap_out_blocks,
        }, host.snapshot())

    def take_block_ops(self) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """This step's (swap_out, swap_in) copies; resets the queues and the host locks."""
        out, inn = self.swap_out_ops, self.swap_in_ops
        self.swap_out_ops, self.swap_in_ops = [], []
        if self.host is not None:
            self.host.end_step()
        return out, inn

    def free(self, req: Request) -> None:
        """Release the request's blocks, tail first (the tail is evicted before the head)."""
        blocks = self._pop(req.request_id)
        if blocks:
            self.pool.free_blocks(reversed(blocks))

    def _pop(self, rid: str) -> list[KVBlock]:
        self.req_to_block_ids.pop(rid, None)
        self._num_registered.pop(rid, None)
        return self.req_to_blocks.pop(rid, [])

    def uncache_from(self, req: Request, first_token: int) -> list[KVBlock]:
        """Drop from the prefix cache the request's blocks holding tokens >= ``first_token``
        (KV a failed step did not write); returns those of them that were registered. Blocks
        before it were written by earlier steps (or are prefix hits) and stay cached."""
        dropped = []
        for b in self.req_to_blocks.get(req.request_id, [])[first_token // self.block_size:]:
            if b.block_hash is not None:
                self.pool.uncache_block(b)
                dropped.append(b)
        return dropped

    # -- pins ------------------------------------------------------------------------------
    def pinnable_blocks(self, req: Request) -> int:
        """Leading blocks of the request that are full and registered (what a pin keeps)."""
        n = 0
        for b in self.req_to_blocks.get(req.request_id, []):
            if b.block_hash is None:
                break
            n += 1
        return n

    def pin_blocks(self, req: Request, key: str) -> list[int]:
        """Move the request's leading full blocks to the holder ``key`` (their references
        change owner; nothing is freed or taken) and free the rest (a partial tail block
        can never be hit). Returns the pinned block ids."""
        assert key not in self.pinned, f"{key} already holds blocks"
        blocks = self._pop(req.request_id)
        n = 0
        while n < len(blocks) and blocks[n].block_hash is not None:
            n += 1
        if n < len(blocks):
            self.pool.free_blocks(reversed(blocks[n:]))
        self.pinned[key] = blocks[:n]
        return [b.block_id for b in blocks[:n]]

    def pinned_block_list(self, key: str) -> list[KVBlock]:
        return self.pinned.get(key, [])

    def unpin(self, key: str) -> None:
        """Drop the pin's references, tail first (they stay cached until evicted)."""
        blocks = self.pinned.pop(key, None)
        if blocks:
            self.pool.free_blocks(reversed(blocks))

    def get_block_ids(self, req: Request) -> list[int]:
        """A copy of the request's block table (block ids)."""
        return list(self.req_to_block_ids.get(req.request_id, ()))

    def check_integrity(self) -> None:
        """Pool invariants, plus: ref count == holders (requests and pins) for every block."""
        self.pool.check_integrity()
        refs: dict[int, int] = {}
        for blocks in list(self.req_to_blocks.values()) + list(self.pinned.values()):
            for b in blocks:
                refs[b.block_id] = refs.get(b.block_id, 0) + 1
        for b in self.pool.blocks:
            assert b.ref_cnt == refs.get(b.block_id, 0), f"{b}: ref count != number of holders"
        for rid, blocks in self.req_to_blocks.items():
            assert self.req_to_block_ids[rid] == [b.block_id for b in blocks], f"{rid}: id table stale"
        assert set(self.req_to_block_ids) == set(self.req_to_blocks)
        if self.host is not None:
            self.host.check_integrity()
