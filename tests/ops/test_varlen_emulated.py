"""The CUDA varlen paged-attention kernel's own source, run on the CPU under thread emulation.

csrc/paged_attention_varlen.cuh is compiled with g++ against tests/ops/emulation/shim (fake
CUDA headers: one std::thread per CUDA thread, barriers for __syncthreads and warp shuffles;
shared memory poisoned with NaN before each CTA) and compared with the torch reference
(continuum.ops.reference.paged_attention_varlen, itself checked against the attention oracle in
test_ops_reference.py). It checks the tile/item search, the causal offsets, GQA rows, block
boundaries and the online softmax; not speed, nor memory-model subtleties of a real GPU.
Skipped without g++. Build: ~20 s once (cached by source hash under /tmp).
"""
from __future__ import annotations

import ctypes

import pytest
import torch

from continuum.ops import reference
from tests.ops.emulation_build import build_attention_kernel, needs_gxx
from tests.ops.helpers import random_block_tables, random_caches, rel_err

pytestmark = needs_gxx


@pytest.fixture(scope="module")
def lib():
    lib = build_attention_kernel("paged_attention_varlen.cuh", ("common.cuh", "paged_attention_varlen.h", "dtype.h"), "varlen_emu.cpp")
    lib.emu_paged_varlen.restype = ctypes.c_int
    return lib


DT = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
TOL = {torch.bfloat16: 1e-2, torch.float16: 3e-3, torch.float32: 2e-5}


def _run(lib, dtype, d, h, hkv, query_lens, seq_lens, bs=16, seed=0):
    """Run the kernel on one step and compare every written row with the reference; rows of
    zero-query items do not exist, and no output row is left unwritten (NaN-poisoned)."""
    gen = torch.Generator().manual_seed(seed)
    need = sum(-(-max(L, 1) // bs) for L in seq_lens)
    nb = need + 3
    kc, vc = random_caches(nb, bs, hkv, d, dtype, "cpu", gen)
    bt = random_block_tables(seq_lens, bs, nb, gen, "cpu")
    # NaN in every cache slot outside the contexts (tails of last blocks, unused blocks): a read
    # past a context's end shows up as NaN in the output (the reference never reads them).
    live = torch.zeros(nb * bs, dtype=torch.bool)
    for i, L in enumerate(seq_lens):
        pos = torch.arange(L)
        live[bt[i, pos // bs] * bs + pos % bs] = True
    kc.view(-1, hkv, d)[~live] = float("nan")
    vc.view(-1, hkv, d)[~live] = float("nan")
    t = sum(query_lens)
    big = torch.randn(t, h + 3, d, generator=gen).to(dtype)              # strided q rows
    q = big[:, :h]
    lens = torch.tensor(seq_lens, dtype=torch.long)
    qsl = torch.tensor([0] + query_lens, dtype=torch.long).cumsum(0)
    out = torch.full((t, h, d), float("nan")).to(dtype)
    tiles = ctypes.c_int(0)
    scale = d ** -0.5
    rc = lib.emu_paged_varlen(
        DT[dtype], ctypes.c_void_p(out.data_ptr()), ctypes.c_void_p(q.data_ptr()),
        ctypes.c_void_p(kc.data_ptr()), ctypes.c_void_p(vc.data_ptr()), ctypes.c_void_p(bt.data_ptr()),
        ctypes.c_void_p(lens.data_ptr()), ctypes.c_void_p(qsl.data_ptr()), len(seq_lens), t, h, hkv, d, bs,
        ctypes.c_int64(q.stride(0)), ctypes.c_int64(q.stride(1)), ctypes.c_int64(bt.stride(0)),
        bt.shape[1], ctypes.c_float(scale), ctypes.byref(tiles))
    assert rc == 0
    ref = torch.empty(out.shape, dtype=torch.float32)
    reference.paged_attention_varlen(ref, q.float(), kc.float(), vc.float(), bt, lens, qsl, scale)
    assert not torch.isnan(ref).any()
    assert not torch.isnan(out).any(), "an output row was not written, or a slot outside a context was read"
    if t:
        assert rel_err(out, ref) < TOL[dtype], (dtype, d, h, hkv, query_lens, seq_lens)
        # per item, so one wrong short item cannot hide in the norm of a long one
        for i, ql in enumerate(query_lens):
            s = int(qsl[i])
            if ql:
                assert rel_err(out[s:s + ql], ref[s:s + ql]) < 3 * TOL[dtype], (i, query_lens, seq_lens)
    return tiles.value


@pytest.mark.parametrize("h,hkv", [(2, 2), (4, 2), (8, 2), (6, 2)])
def test_gqa_groups(lib, h, hkv):
    # G = 1, 2, 4 and 3 (a tile of 64 rows holds 21 tokens of 3 heads: one row unused)
    _run(lib, torch.float32, 64, h, hkv, [5, 1, 30], [5, 20, 40], seed=h)


def test_block_boundaries(lib):
    # contexts of 1, block_size - 1, block_size, block_size + 1, decodes and chunks
    _run(lib, torch.float32, 64, 4, 2, [1, 15, 1, 3, 1, 17], [1, 15, 16, 16, 17, 17])


def test_chunk_boundaries_over_a_cached_prefix(lib):
    # q_len 1, 2, 17 over prefixes; a whole context; a chunk over a long prefix (several KV tiles,
    # query tiles that straddle KV tiles)
    _run(lib, torch.float32, 64, 4, 1, [1, 2, 17, 33, 40], [9, 50, 70, 33, 230], seed=3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_mixed_batch_with_empty_items(lib, dtype):
    # decodes, prefill chunks, an item with no new tokens, an empty sequence, head size 128
    _run(lib, dtype, 128, 4, 2, [1, 0, 12, 1, 0, 20], [30, 7, 44, 1, 0, 20], seed=5)


def test_head_size_256_and_fp16(lib):
    # 32 rows per CTA at D = 256: G = 4 -> 8 tokens per tile
    _run(lib, torch.float16, 256, 4, 1, [1, 9, 3], [17, 9, 40], seed=7)


def test_decodes_with_wide_groups_use_several_warps(lib):
    # G = 8: a decode item's 8 rows span two warps' row slots; G = 10 over 64-row tiles (6 tokens)
    _run(lib, torch.float32, 64, 16, 2, [1, 1, 13], [3, 40, 13], seed=11)
    _run(lib, torch.float32, 64, 20, 2, [1, 7, 1], [70, 7, 1], seed=12)


def test_long_prefix_many_kv_and_query_tiles(lib):
    # a 70-token chunk over a 600-token prefix (21 KV tiles, 4 query tiles at G = 4) and a
    # decode at 333 beside it
    _run(lib, torch.bfloat16, 128, 8, 2, [70, 1], [670, 333], seed=13)


def test_other_block_size_and_many_tiles(lib):
    # block size 8; 64-row tiles of a G=1 chunk of 70 tokens -> two query tiles per KV head
    assert _run(lib, torch.bfloat16, 64, 2, 2, [70, 1], [75, 8], bs=8, seed=9) == 70 // 64 + 2


def test_group_too_large_is_refused(lib):
    # G = 128 > 64 rows per CTA at D = 64: the launcher refuses (the binding checks first)
    gen = torch.Generator().manual_seed(0)
    kc, vc = random_caches(2, 16, 1, 64, torch.float32, "cpu", gen)
    q = torch.randn(1, 128, 64)
    out = torch.empty_like(q)
    bt = torch.zeros(1, 1, dtype=torch.long)
    lens, qsl = torch.tensor([1]), torch.tensor([0, 1])
    tiles = ctypes.c_int(0)
    rc = lib.emu_paged_varlen(0, ctypes.c_void_p(out.data_ptr()), ctypes.c_void_p(q.data_ptr()),
                              ctypes.c_void_p(kc.data_ptr()), ctypes.c_void_p(vc.data_ptr()),
                              ctypes.c_void_p(bt.data_ptr()), ctypes.c_void_p(lens.data_ptr()),
                              ctypes.c_void_p(qsl.data_ptr()), 1, 1, 128, 1, 64, 16,
                              ctypes.c_int64(q.stride(0)), ctypes.c_int64(q.stride(1)),
                              ctypes.c_int64(1), 1, ctypes.c_float(0.1), ctypes.byref(tiles))
    assert rc == 1


@pytest.mark.parametrize("seed", range(6))
def test_random_mixed_steps(lib, seed):
    # random steps: 1-6 items, each a decode, an empty item, a chunk over a prefix or a whole
    # prompt; random GQA group, head size, dtype and block size
    g = torch.Generator().manual_seed(100 + seed)

    def pick(options):
        return options[int(torch.randint(len(options), (1,), generator=g))]

    group, hkv = pick([1, 2, 3, 4, 8]), pick([1, 2])
    d, dtype, bs = pick([64, 128]), pick([torch.float32, torch.bfloat16]), pick([8, 16, 32])
    qls, sls = [], []
    for _ in range(int(torch.randint(1, 7, (1,), generator=g))):
        kind = pick(["decode", "empty", "chunk", "prompt"])
        ctx = int(torch.randint(1, 200, (1,), generator=g))
        ql = {"decode": 1, "empty": 0, "chunk": int(torch.randint(1, ctx + 1, (1,), generator=g)),
              "prompt": ctx}[kind]
        qls.append(ql)
        sls.append(ctx)
    if sum(qls) == 0:
        qls[0], sls[0] = 1, max(sls[0], 1)
    _run(lib, dtype, d, group * hkv, hkv, qls, sls, bs=bs, seed=seed)
