"""Block pool and KV manager: exact block ids, free-queue order and eviction order."""
import random

import pytest

from continuum.kv.block_pool import BlockPool, hash_block
from continuum.kv.kv_manager import KVCacheManager
from continuum.request import Request
from continuum.sampling_params import SamplingParams


def make_req(rid, tokens):
    return Request(rid, tokens, SamplingParams(max_tokens=4), arrival_time=0.0)


def test_fresh_pool_hands_out_blocks_in_id_order():
    pool = BlockPool(6)
    assert pool.free_queue.block_ids() == [0, 1, 2, 3, 4, 5]
    got = pool.get_new_blocks(3)
    assert [b.block_id for b in got] == [0, 1, 2]
    assert pool.free_queue.block_ids() == [3, 4, 5]
    assert pool.counts() == {"free": 3, "cached": 0, "in_use": 3, "total": 6}
    pool.check_integrity()


def test_free_appends_to_tail_in_given_order_and_reuses_lru_first():
    pool = BlockPool(4)
    a = pool.get_new_blocks(2)               # 0, 1
    b = pool.get_new_blocks(2)               # 2, 3
    pool.free_blocks(reversed(a))            # tail first: 1 then 0
    assert pool.free_queue.block_ids() == [1, 0]
    pool.free_blocks(reversed(b))
    assert pool.free_queue.block_ids() == [1, 0, 3, 2]
    assert [x.block_id for x in pool.get_new_blocks(3)] == [1, 0, 3]
    pool.check_integrity()


def test_cached_block_is_evicted_only_when_reached_and_loses_hash():
    pool = BlockPool(3)
    b0, b1 = pool.get_new_blocks(2)
    h0 = hash_block(None, (1, 2))
    h1 = hash_block(h0, (3, 4))
    pool.cache_block(b0, h0)
    pool.cache_block(b1, h1)
    pool.free_blocks([b1, b0])
    assert pool.counts() == {"free": 1, "cached": 2, "in_use": 0, "total": 3}
    assert pool.free_queue.block_ids() == [2, 1, 0]
    # A hit pulls block 0 out of the queue without evicting anything.
    pool.touch([pool.get_cached_block(h0)])
    assert pool.free_queue.block_ids() == [2, 1]
    # New blocks evict from the head: 2 (plain free) then 1 (cached: its hash goes).
    new = pool.get_new_blocks(2)
    assert [x.block_id for x in new] == [2, 1]
    assert pool.get_cached_block(h1) is None and pool.get_cached_block(h0) is b0
    assert pool.num_evictions == 1
    pool.check_integrity()


def test_double_free_is_caught():
    pool = BlockPool(2)
    (b,) = pool.get_new_blocks(1)
    pool.free_blocks([b])
    with pytest.raises(AssertionError):
        pool.free_blocks([b])


def test_chained_hash_depends_on_whole_prefix():
    a = hash_block(hash_block(None, (1, 2)), (3, 4))
    b = hash_block(hash_block(None, (9, 2)), (3, 4))
    assert a != b
    assert a == hash_block(hash_block(None, (1, 2)), (3, 4))


def test_kv_manager_prefix_hit_exact_blocks_and_tail_first_eviction():
    kv = KVCacheManager(num_blocks=8, block_size=4)
    r1 = make_req("a", list(range(10)))      # 2 full blocks + 2 tokens
    hit, n = kv.get_computed_blocks(r1)
    assert (hit, n) == ([], 0)
    new = kv.allocate_slots(r1, 10)
    assert [b.block_id for b in new] == [0, 1, 2]
    assert kv.pool.counts()["in_use"] == 3
    # the two full blocks are cached under r1's hashes
    assert [kv.pool.get_cached_block(h).block_id for h in r1.block_hashes] == [0, 1]
    kv.free(r1)
    assert kv.pool.free_queue.block_ids() == [3, 4, 5, 6, 7, 2, 1, 0]
    # same first 8 tokens: 2 blocks hit; block 2 (partial, no hash) is not a hit
    r2 = make_req("b", list(range(8)) + [99, 98, 97])
    hit, n = kv.get_computed_blocks(r2)
    assert [b.block_id for b in hit] == [0, 1] and n == 8
    r2.num_computed_tokens = 0
    new = kv.allocate_slots(r2, 3, hit)
    assert [b.block_id for b in new] == [3]
    assert kv.get_block_ids(r2) == [0, 1, 3]
    kv.record_lookup(r2, n)
    assert kv.stats.hits == 8 and kv.stats.queries == 11
    kv.free(r2)
    kv.check_integrity()
    assert kv.pool.counts() == {"free": 6, "cached": 2, "in_use": 0, "total": 8}


def test_full_hit_leaves_last_token_to_compute():
    kv = KVCacheManager(num_blocks=4, block_size=4)
    r1 = make_req("a", list(range(8)))
    kv.allocate_slots(r1, 8)
    kv.free(r1)
    r2 = make_req("b", list(range(8)))
    hit, n = kv.get_computed_blocks(r2)
    assert n == 4 and [b.block_id for b in hit] == [0]


def test_allocate_fails_atomically_when_pool_is_short():
    kv = KVCacheManager(num_blocks=3, block_size=4)
    r1 = make_req("a", list(range(8)))
    kv.allocate_slots(r1, 8)
    r2 = make_req("b", list(range(100, 112)))
    assert kv.allocate_slots(r2, 12) is None
    assert kv.get_block_ids(r2) == [] and kv.num_free_blocks == 1
    kv.check_integrity()


def test_hit_blocks_in_free_queue_count_against_free_space():
    kv = KVCacheManager(num_blocks=3, block_size=4)
    r1 = make_req("a", list(range(8)))
    kv.allocate_slots(r1, 8)
    kv.free(r1)                               # blocks 0,1 cached; 3 free in all
    r2 = make_req("b", list(range(8)) + list(range(50, 58)))
    hit, n = kv.get_computed_blocks(r2)
    assert n == 8
    # needs 2 more blocks on top of the 2 hits, but only 1 plain block remains
    assert kv.allocate_slots(r2, 8, hit) is None
    kv.check_integrity()
    assert kv.pool.counts() == {"free": 1, "cached": 2, "in_use": 0, "total": 3}


def test_incremental_counts_equal_a_full_walk_through_random_operations():
    """Allocate (evicting cached blocks), touch hits, cache and uncache (in use and in the free
    queue, duplicates included), free, and drain-then-reset, seeded: the O(1) counts never
    drift from a walk of the pool."""
    rng = random.Random(0)
    pool = BlockPool(12)
    keys = [hash_block(None, (k,)) for k in range(10)]     # few keys: duplicate registrations
    held: list[list] = []                                  # each holder's blocks
    weights = {"allocate": 4, "touch": 2, "cache": 3, "cache_free": 1, "uncache": 1, "free": 4,
               "reset": 0.2}
    done = dict.fromkeys(weights, 0)
    for _ in range(3000):
        op = rng.choices(list(weights), list(weights.values()))[0]
        if op == "allocate" and pool.num_free_blocks:
            held.append(pool.get_new_blocks(rng.randint(1, min(4, pool.num_free_blocks))))
        elif op == "touch":
            hits = [b for b in (pool.get_cached_block(k) for k in rng.sample(keys, 3)) if b]
            if not hits:
                continue
            pool.touch(hits)
            held.append(hits)
        elif op == "cache" and held:
            pool.cache_block(rng.choice(rng.choice(held)), rng.choice(keys))
        elif op == "cache_free" and pool.num_free_blocks:
            pool.cache_block(rng.choice(list(pool.free_queue)), rng.choice(keys))
        elif op == "uncache" and pool.cached:
            pool.uncache_block(rng.choice(list(pool.cached.values())))
        elif op == "free" and held:
            pool.free_blocks(reversed(held.pop(rng.randrange(len(held)))))
        elif op == "reset":
            while held:
                pool.free_blocks(reversed(held.pop()))
            assert pool.reset_prefix_cache()
        else:
            continue
        done[op] += 1
        assert pool.counts() == pool.walk_counts(), op
        pool.check_integrity()
    assert min(done.values()) >= 20, done                  # every operation was exercised
    assert pool.num_evictions >= 100


def test_check_integrity_catches_a_drifted_counter():
    pool = BlockPool(3)
    (b,) = pool.get_new_blocks(1)
    pool.cache_block(b, hash_block(None, (1,)))
    pool.free_blocks([b])
    pool.check_integrity()
    pool.num_cached_blocks += 1
    with pytest.raises(AssertionError, match="incremental counts"):
        pool.check_integrity()
