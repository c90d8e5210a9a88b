"""The CUDA decode kernel's own source, run on the CPU under a thread emulation (no GPU).

csrc/paged_attention.cuh is compiled with g++ against tests/ops/emulation/shim (fake CUDA
headers: one std::thread per CUDA thread, barriers for __syncthreads and warp shuffles) and
compared with the torch reference. It checks the index math, the GQA head chunks, the split
reduction and the padding rows; not speed, nor memory-model subtleties of a real GPU.
Skipped without g++. Build: ~20 s once per session (cached by source hash under /tmp).
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
    lib = build_attention_kernel("paged_attention.cuh", ("common.cuh", "paged_attention.h", "dtype.h"), "decode_emu.cpp")
    lib.emu_paged_decode.restype = ctypes.c_int
    return lib


DT = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
TOL = {torch.bfloat16: 1e-2, torch.float16: 3e-3, torch.float32: 2e-5}


def _run(lib, dtype, d, h, hkv, seq_lens, bs=16, num_sms=132, max_seq_len=None, seed=0):
    gen = torch.Generator().manual_seed(seed)
    need = sum(-(-max(L, 1) // bs) for L in seq_lens)
    nb = need + 3
    kc, vc = random_caches(nb, bs, hkv, d, dtype, "cpu", gen)
    bt = random_block_tables(seq_lens, bs, nb, gen, "cpu")
    big = torch.randn(len(seq_lens), h + 3, d, generator=gen).to(dtype)    # strided q rows
    q = big[:, :h]
    lens = torch.tensor(seq_lens, dtype=torch.long)
    out = torch.full((len(seq_lens), h, d), float("nan")).to(dtype)
    splits = ctypes.c_int(0)
    scale = d ** -0.5
    msl = max_seq_len or max(seq_lens)
    rc = lib.emu_paged_decode(
        DT[dtype], ctypes.c_void_p(out.data_ptr()), ctypes.c_void_p(q.data_ptr()),
        ctypes.c_void_p(kc.data_ptr()), ctypes.c_void_p(vc.data_ptr()), ctypes.c_void_p(bt.data_ptr()),
        ctypes.c_void_p(lens.data_ptr()), len(seq_lens), h, hkv, d, bs,
        ctypes.c_int64(q.stride(0)), ctypes.c_int64(q.stride(1)), ctypes.c_int64(bt.stride(0)),
        ctypes.c_float(scale), msl, num_sms, ctypes.byref(splits))
    assert rc == 0
    ref = torch.empty(out.shape, dtype=torch.float32)
    reference.paged_attention_decode(ref, q.float(), kc.float(), vc.float(), bt, lens, scale, msl)
    live = lens > 0
    assert not torch.isnan(out).any()
    assert torch.all(out[~live] == 0)
    if live.any():
        assert rel_err(out[live], ref[live]) < TOL[dtype], (dtype, d, h, hkv, seq_lens)
    return splits.value


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_single_split_block_boundaries(lib, dtype):
    # num_sms=1: partitions of 512, one split for contexts <= 512
    assert _run(lib, dtype, 128, 4, 1, [1, 16, 17, 512], num_sms=1) == 1


@pytest.mark.parametrize("d", [64, 256])
def test_head_sizes(lib, d):
    _run(lib, torch.bfloat16, d, 4, 4, [33, 7], num_sms=1)


@pytest.mark.parametrize("h,hkv", [(3, 1), (12, 4), (10, 1), (8, 8)])
def test_gqa_padding_and_chunks(lib, h, hkv):
    # group 3 pads to 4; group 10 runs as two chunks (8 + 2)
    _run(lib, torch.float32, 64, h, hkv, [40], num_sms=1, seed=h)


def test_splits_and_reduction(lib):
    # num_sms=132 shrinks partitions to 128 tokens: 1300 tokens -> 11 splits
    assert _run(lib, torch.bfloat16, 64, 2, 1, [1300, 1, 129, 0], num_sms=132) == 11


def test_graph_style_max_len_and_padding_rows(lib):
    # splits planned for 2048 tokens while the batch is shorter; zero-length rows give zeros
    assert _run(lib, torch.float32, 64, 2, 1, [0, 5, 700, 0], num_sms=1, max_seq_len=2048) == 4


def test_other_block_sizes(lib):
    _run(lib, torch.float32, 64, 2, 1, [9, 65], bs=8, num_sms=1)
    _run(lib, torch.float32, 64, 2, 1, [64, 300], bs=64, num_sms=4)


@pytest.mark.parametrize("h,hkv,sms", [(32, 8, 132), (12, 4, 132), (9, 3, 78), (40, 4, 132), (8, 8, 16)])
def test_workspace_bound_covers_the_cpp_plan(lib, h, hkv, sms):
    # continuum.ops.decode_workspace_floats (what the CUDA backend preallocates before the KV
    # cache is sized) against the C++ planner itself, over every batch size and a sweep of
    # context lengths that crosses each partition-halving threshold.
    from continuum import ops

    d, max_seqs, max_len = 128, 64, 20000
    bound = ops.decode_workspace_floats(max_seqs, h, hkv, d, max_len, sms)
    part, splits = ctypes.c_int(0), ctypes.c_int(0)
    worst = 0
    lens = sorted({1, 128, 129, 511, 513, 4096, max_len} | set(range(100, max_len + 1, 997)))
    for b in range(1, max_seqs + 1):
        for L in lens:
            lib.emu_decode_plan(b, h, hkv, L, sms, ctypes.byref(part), ctypes.byref(splits))
            need = b * h * splits.value * (d + 2) if splits.value > 1 else 0
            worst = max(worst, need)
    assert 0 < worst <= bound
    assert bound <= 2 * worst + 4 * sms * h * (d + 2)      # not wildly over-sized either
    assert ops.decode_workspace_floats(max_seqs, h, hkv, d, 128, sms) == 0   # one split always
