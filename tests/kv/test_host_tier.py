"""The host-memory KV tier: LRU host pool, swap-out on eviction, swap-in on a host hit."""
from continuum.kv.host_pool import HostBlockPool
from continuum.kv.kv_manager import KVCacheManager
from continuum.request import Request
from continuum.sampling_params import SamplingParams


def make_req(rid, tokens):
    return Request(rid, tokens, SamplingParams(max_tokens=4), arrival_time=0.0)


def test_host_pool_lru_and_locks():
    h = HostBlockPool(2)
    assert h.put(11) == 0 and h.put(12) == 1
    assert h.put(13) is None                  # both written this step: locked
    h.end_step()
    assert h.put(11) is None                  # already there: refreshed, nothing to copy
    assert h.put(13) == 1 and 12 not in h     # LRU victim was 12 (11 was refreshed)
    h.end_step()
    assert h.lookup(11) == 0
    h.lock(0)
    assert h.put(14) == 1 and 13 not in h     # 11 is locked (a swap-in source), 13 goes
    h.check_integrity()
    assert h.num_evictions == 2


def test_eviction_swaps_out_and_a_later_hit_swaps_in_exact_ids():
    kv = KVCacheManager(num_blocks=4, block_size=4, num_host_blocks=4)
    a = make_req("a", list(range(9)))
    assert [b.block_id for b in kv.allocate_slots(a, 9)] == [0, 1, 2]
    kv.free(a)                                # free queue: 3, then 2 (no hash), 1, 0 (cached)
    assert kv.pool.free_queue.block_ids() == [3, 2, 1, 0]
    b = make_req("b", list(range(100, 116)))
    assert [x.block_id for x in kv.allocate_slots(b, 16)] == [3, 2, 1, 0]
    # blocks 1 and 0 held a's prefix: copied out before reuse (host blocks 0, 1)
    assert kv.take_block_ops() == ([(1, 0), (0, 1)], [])
    kv.free(b)
    a2 = make_req("a2", list(range(13)))
    hit, n = kv.get_computed_blocks(a2)
    assert hit == [] and n == 0
    host_hits = kv.get_host_hits(a2, 0)
    assert host_hits == [1, 0]                # a's blocks 0 and 1 live in host blocks 1 and 0
    new = kv.allocate_slots(a2, 13 - 8, hit, host_hits)
    assert [x.block_id for x in new] == [0, 1, 2, 3]
    # b's blocks are evicted in turn: two fit in free host blocks, the rest find every host
    # block locked (sources of this step's swap-ins, destinations of its swap-outs): dropped
    assert kv.take_block_ops() == ([(0, 2), (1, 3)], [(1, 0), (0, 1)])
    assert kv.pool.blocks[0].block_hash == a2.block_hashes[0]
    assert kv.pool.blocks[1].block_hash == a2.block_hashes[1]
    assert kv.stats.swap_in_blocks == 2 and kv.stats.swap_out_blocks == 4
    kv.check_integrity()
    kv.free(a2)
    kv.check_integrity()


def test_no_host_tier_records_nothing():
    kv = KVCacheManager(num_blocks=2, block_size=4)
    a = make_req("a", list(range(8)))
    kv.allocate_slots(a, 8)
    kv.free(a)
    kv.allocate_slots(make_req("b", list(range(50, 58))), 8)
    assert kv.pool.evicted == [] and kv.take_block_ops() == ([], [])
