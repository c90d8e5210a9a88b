"""Prefix-cache keys: SHA-256 chained block hashes, per-request cache salts, and the host tier
keyed the same way (a hit is never checked against tokens, so keys must not collide)."""
import hashlib
import os
import struct
import subprocess
import sys
from pathlib import Path

from continuum.kv.block_pool import NONE_HASH, hash_block, root_hash
from continuum.kv.kv_manager import KVCacheManager
from continuum.request import Request
from continuum.sampling_params import SamplingParams

REPO = Path(__file__).resolve().parents[2]


def make_req(rid, tokens, cache_salt=None):
    return Request(rid, tokens, SamplingParams(max_tokens=4), arrival_time=0.0, cache_salt=cache_salt)


def test_key_is_sha256_of_parent_key_and_little_endian_int64_tokens():
    assert NONE_HASH == hashlib.sha256(b"continuum prefix cache root").digest()
    h0 = hash_block(None, [1, 2])
    assert h0 == hashlib.sha256(NONE_HASH + struct.pack("<2q", 1, 2)).digest()
    assert hash_block(h0, (3, 4)) == hashlib.sha256(h0 + struct.pack("<2q", 3, 4)).digest()
    assert root_hash(None) == NONE_HASH
    assert root_hash("tenant-a") == hashlib.sha256(bytes(32) + b"tenant-a").digest()


def test_key_depends_on_every_token_and_on_the_parent():
    toks = list(range(100, 116))
    base = hash_block(None, toks)
    changed = {hash_block(None, toks[:i] + [toks[i] + 1] + toks[i + 1:]) for i in range(16)}
    assert len(changed) == 16 and base not in changed
    assert hash_block(base, toks) != hash_block(hash_block(None, [7] + toks[1:]), toks)
    assert hash_block(None, toks[:8]) != hash_block(None, toks[:8] + [0])   # length counts


def test_token_ids_python_hash_aliases_get_distinct_keys():
    # The old key, Python's hash((parent, tuple)), reduces ints modulo 2**61 - 1 and maps -1
    # to -2, so these token blocks shared a key; their int64 encodings differ.
    for a, b in [((1, 2), (2**61, 2)), ((5, -1), (5, -2))]:
        assert hash((0, a)) == hash((0, b))
        assert hash_block(None, a) != hash_block(None, b)


def test_salt_separates_first_block_and_everything_chained_after_it():
    toks = list(range(16))
    plain, a, a2, b = (hash_block(root_hash(s), toks) for s in (None, "a", "a", "b"))
    assert a == a2 and len({plain, a, b}) == 3
    assert len({hash_block(parent, toks) for parent in (plain, a, b)}) == 3


def test_keys_are_equal_across_processes():
    code = ("from continuum.kv.block_pool import hash_block, root_hash\n"
            "h = hash_block(root_hash('salt'), list(range(16)))\n"
            "print(hash_block(h, list(range(16, 32))).hex())\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.strip()
    here = hash_block(hash_block(root_hash("salt"), list(range(16))), list(range(16, 32)))
    assert out == here.hex()


def test_request_hashes_are_the_chain_from_its_salt_extended_as_blocks_fill():
    kv = KVCacheManager(num_blocks=1, block_size=4)
    req = make_req("a", list(range(10)), cache_salt="s")
    h0 = hash_block(root_hash("s"), [0, 1, 2, 3])
    h1 = hash_block(h0, [4, 5, 6, 7])
    assert kv.update_block_hashes(req) == [h0, h1]
    req.append_output_token(10)
    assert kv.update_block_hashes(req) == [h0, h1]          # block 2 is not full yet
    req.append_output_token(11)
    assert kv.update_block_hashes(req) == [h0, h1, hash_block(h1, [8, 9, 10, 11])]


def test_prefix_hit_only_between_equal_salts():
    kv = KVCacheManager(num_blocks=8, block_size=4)
    toks = list(range(10))                       # 2 full blocks + 2 tokens
    r1 = make_req("a", toks, cache_salt="tenant-a")
    assert [b.block_id for b in kv.allocate_slots(r1, 10)] == [0, 1, 2]
    kv.free(r1)
    for rid, salt in [("none", None), ("other", "tenant-b")]:
        hit, n = kv.get_computed_blocks(make_req(rid, toks, cache_salt=salt))
        assert (hit, n) == ([], 0), rid
    same = make_req("same", toks, cache_salt="tenant-a")
    hit, n = kv.get_computed_blocks(same)
    assert [b.block_id for b in hit] == [0, 1] and n == 8
    assert same.block_hashes == r1.block_hashes
    kv.check_integrity()


def test_salted_request_misses_an_unsalted_prefix():
    kv = KVCacheManager(num_blocks=8, block_size=4)
    toks = list(range(9))
    r1 = make_req("plain", toks)
    kv.allocate_slots(r1, 9)
    kv.free(r1)
    assert kv.get_computed_blocks(make_req("salted", toks, cache_salt="s")) == ([], 0)
    hit, n = kv.get_computed_blocks(make_req("plain2", toks))
    assert [b.block_id for b in hit] == [0, 1] and n == 8


def test_host_tier_is_keyed_by_the_salted_hashes():
    kv = KVCacheManager(num_blocks=4, block_size=4, num_host_blocks=4)
    toks = list(range(9))
    a = make_req("a", toks, cache_salt="tenant-a")
    kv.allocate_slots(a, 9)
    kv.free(a)
    filler = make_req("filler", list(range(100, 116)))
    kv.allocate_slots(filler, 16)                # evicts a's blocks 1, 0 to host blocks 0, 1
    assert kv.take_block_ops() == ([(1, 0), (0, 1)], [])
    assert [kv.host.lookup(h) for h in a.block_hashes] == [1, 0]
    kv.free(filler)
    other = make_req("b", toks, cache_salt="tenant-b")
    assert kv.get_computed_blocks(other) == ([], 0) and kv.get_host_hits(other, 0) == []
    same = make_req("a2", toks, cache_salt="tenant-a")
    assert kv.get_computed_blocks(same) == ([], 0) and kv.get_host_hits(same, 0) == [1, 0]
    kv.check_integrity()
