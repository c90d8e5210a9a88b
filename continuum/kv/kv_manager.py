"""Per-request block tables and prefix matching on top of the block pool (no torch, no clock).

Life of a request's blocks:
1. ``get_computed_blocks(req)``: the longest run of its full blocks already cached (prefix hit).
2. ``allocate_slots(req, n, hit_blocks)``: take the hit blocks, add fresh blocks so that
   ``num_computed_tokens + n`` tokens fit, and register every block that becomes full.
3. ``free(req)``: release its blocks tail-first (they stay cached for later hits).
"""
from __future__ import annotations

from dataclasses import dataclass

from continuum.kv.block_pool import BlockPool, KVBlock, hash_block
from continuum.request import Request


@dataclass
class PrefixCacheStats:
    queries: int = 0     # prompt tokens looked up
    hits: int = 0        # of which found cached
    requests: int = 0

    @property
    def hit_rate(self) -> float:
        return self.hits / self.queries if self.queries else 0.0


class KVCacheManager:
    def __init__(self, num_blocks: int, block_size: int = 16, enable_caching: bool = True):
        self.block_size = block_size
        self.enable_caching = enable_caching
        self.pool = BlockPool(num_blocks, enable_caching)
        self.req_to_blocks: dict[str, list[KVBlock]] = {}
        self.stats = PrefixCacheStats()

    @property
    def num_free_blocks(self) -> int:
        return self.pool.num_free_blocks

    @property
    def usage(self) -> float:
        return self.pool.usage

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def update_block_hashes(self, req: Request) -> list[int]:
        """Extend ``req.block_hashes`` to cover every full block of its known tokens."""
        bs, hashes, toks = self.block_size, req.block_hashes, req.all_token_ids
        while (len(hashes) + 1) * bs <= len(toks):
            i = len(hashes)
            hashes.append(hash_block(hashes[-1] if hashes else None, tuple(toks[i * bs:(i + 1) * bs])))
        return hashes

    def get_computed_blocks(self, req: Request) -> tuple[list[KVBlock], int]:
        """Cached blocks matching the request's prefix and the number of tokens they cover.

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

    def record_lookup(self, req: Request, num_hit_tokens: int) -> None:
        self.stats.requests += 1
        self.stats.queries += req.num_tokens
        self.stats.hits += num_hit_tokens

    def can_fit(self, req: Request, num_new_tokens: int, hit_blocks: list[KVBlock] = ()) -> bool:
        return self._num_blocks_needed(req, num_new_tokens, hit_blocks) is not None

    def _num_blocks_needed(self, req, num_new_tokens, hit_blocks) -> int | None:
        have = self.req_to_blocks.get(req.request_id, [])
        total = req.num_computed_tokens + len(hit_blocks) * self.block_size + num_new_tokens
        need = self.blocks_for(total) - len(have) - len(hit_blocks)
        # Hit blocks sitting in the free queue stop being allocatable once we take them.
        reclaim = sum(1 for b in hit_blocks if b.ref_cnt == 0)
        if max(need, 0) + reclaim > self.pool.num_free_blocks:
            return None
        return max(need, 0)

    def allocate_slots(self, req: Request, num_new_tokens: int,
                       hit_blocks: list[KVBlock] = ()) -> list[KVBlock] | None:
        """Make room for ``num_new_tokens`` more tokens after the computed ones (and after the
        prefix-hit blocks, which are taken first). Returns the new blocks, or None (and changes
        nothing) when the pool cannot supply them."""
        need = self._num_blocks_needed(req, num_new_tokens, hit_blocks)
        if need is None:
            return None
        blocks = self.req_to_blocks.setdefault(req.request_id, [])
        if hit_blocks:
            self.pool.touch(hit_blocks)
            blocks.extend(hit_blocks)
        new = self.pool.get_new_blocks(need)
        blocks.extend(new)
        if self.enable_caching:
            # Blocks full once this step's tokens are written can be found by later requests:
            # their token ids are known now and the KV is written before anyone reads it.
            n_after = req.num_computed_tokens + len(hit_blocks) * self.block_size + num_new_tokens
            hashes = self.update_block_hashes(req)
            for i in range(min(n_after // self.block_size, len(hashes))):
                if blocks[i].block_hash is None:
                    self.pool.cache_block(blocks[i], hashes[i])
        return new

    def free(self, req: Request) -> None:
        """Release the request's blocks, tail first (the tail is evicted before the head)."""
        blocks = self.req_to_blocks.pop(req.request_id, None)
        if blocks:
            self.pool.free_blocks(reversed(blocks))

    def get_block_ids(self, req: Request) -> list[int]:
        return [b.block_id for b in self.req_to_blocks.get(req.request_id, [])]

    def check_integrity(self) -> None:
        self.pool.check_integrity()
        refs: dict[int, int] = {}
        for blocks in self.req_to_blocks.values():
            for b in blocks:
                refs[b.block_id] = refs.get(b.block_id, 0) + 1
        for b in self.pool.blocks:
            assert b.ref_cnt == refs.get(b.block_id, 0), f"{b}: ref count != number of holders"
