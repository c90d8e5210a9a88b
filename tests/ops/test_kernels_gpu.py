"""Every CUDA kernel against the torch reference (skipped without CUDA).

Fresh random inputs per case (never zeros), outputs poisoned with NaN before each run, shapes
that cross block and split-partition boundaries, long contexts, GQA ratios including ones that
pad (3) or chunk (10) the per-CTA head group. Tolerances: relative L2 error of the output.
"""
from __future__ import annotations

import pytest
import torch

from continuum import ops
from continuum.ops import reference
from tests.ops.helpers import random_block_tables, random_caches, rel_err

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

DEV = "cuda"
TOL = {torch.bfloat16: 1e-2, torch.float16: 3e-3, torch.float32: 2e-5}


def row_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    """Worst relative L2 error over rows (sequences). A pooled error is dominated by the rows
    with the largest outputs, i.e. the shortest contexts (a 1-token row's output is a whole V
    row), so it would hide a wrong split reduction in the long rows."""
    return max(rel_err(a, b) for a, b in zip(x, ref))


@pytest.fixture(scope="module", autouse=True)
def built():
    # On a GPU machine a build failure is a failure, not a skip.
    assert ops.load(verbose=True), ops.unavailable_reason()


def _decode_case(dtype, d, h, hkv, seq_lens, block_size=16, seed=0, q_view=False):
    gen = torch.Generator().manual_seed(seed)
    need = sum(-(-max(L, 1) // block_size) for L in seq_lens)
    nb = need + 7
    kc, vc = random_caches(nb, block_size, hkv, d, dtype, DEV, gen)
    bt = random_block_tables(seq_lens, block_size, nb, gen, DEV)
    B = len(seq_lens)
    if q_view:   # q as a strided view of a fused qkv-like buffer
        big = torch.randn(B, (h + 2 * hkv) * d, generator=gen).to(DEV, dtype)
        q = big[:, :h * d].view(B, h, d)
    else:
        q = torch.randn(B, h, d, generator=gen).to(DEV, dtype)
    lens = torch.tensor(seq_lens, dtype=torch.long, device=DEV)
    return q, kc, vc, bt, lens


def _check_decode(dtype, d, h, hkv, seq_lens, **kw):
    q, kc, vc, bt, lens = _decode_case(dtype, d, h, hkv, seq_lens, **kw)
    scale = d ** -0.5
    out = torch.full(q.shape, float("nan"), dtype=dtype, device=DEV)
    ops.paged_attention_decode(out, q, kc, vc, bt, lens, scale, max(seq_lens))
    torch.cuda.synchronize()
    ref = torch.empty(q.shape, dtype=torch.float32, device=DEV)
    reference.paged_attention_decode(ref, q.float(), kc.float(), vc.float(), bt, lens, scale, max(seq_lens))
    assert not torch.isnan(out).any()
    live = lens > 0
    assert torch.all(out[~live] == 0)
    assert row_err(out[live], ref[live]) < TOL[dtype], (dtype, d, h, hkv, seq_lens)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("d", [64, 128, 256])
def test_decode_dtypes_and_head_sizes(dtype, d):
    # block boundaries (15/16/17), partition boundaries (511-513), one token
    _check_decode(dtype, d, 8, 2, [1, 15, 16, 17, 511, 512, 513, 100], seed=d)


@pytest.mark.parametrize("h,hkv", [(8, 8), (8, 1), (32, 8), (12, 4), (40, 4), (64, 8)])
def test_decode_gqa_ratios(h, hkv):
    _check_decode(torch.bfloat16, 128, h, hkv, [3, 77, 1000, 2049], seed=h)


@pytest.mark.parametrize("seq_lens", [[32768], [20000, 5, 12345], [131072 // 4] * 2])
def test_decode_long_contexts_split(seq_lens):
    _check_decode(torch.bfloat16, 128, 32, 8, seq_lens, seed=len(seq_lens))


@pytest.mark.parametrize("block_size", [8, 32, 128])
def test_decode_block_sizes(block_size):
    _check_decode(torch.float16, 128, 16, 4, [1, block_size - 1, block_size + 1, 3000], block_size=block_size)


def test_decode_padding_rows_and_strided_q():
    _check_decode(torch.bfloat16, 128, 16, 4, [0, 300, 0, 4096], q_view=True)
    _check_decode(torch.bfloat16, 64, 4, 2, [0, 1], q_view=True)



def test_bad_arguments_raise_and_leave_the_context_usable():
    """A caller mistake is a RuntimeError from the binding's checks, not an illegal address
    (which would poison the CUDA context for every later test in the process)."""
    q, kc, vc, bt, lens = _decode_case(torch.bfloat16, 128, 8, 2, [40, 7])
    out = torch.empty_like(q)
    for bad in (dict(seq_lens=lens.cpu()), dict(block_tables=bt[:1]), dict(v_cache=vc[:-1]),
                dict(out=out[:1])):
        a = dict(out=out, q=q, k_cache=kc, v_cache=vc, block_tables=bt, seq_lens=lens)
        a.update(bad)
        with pytest.raises(RuntimeError):
            torch.ops.continuum_C.paged_attention_decode(a["out"], a["q"], a["k_cache"], a["v_cache"],
                                                         a["block_tables"], a["seq_lens"], 0.1, 40)
    key = torch.randn(3, 2, 128, device=DEV, dtype=torch.bfloat16)
    with pytest.raises(RuntimeError):       # one slot per token
        torch.ops.continuum_C.reshape_and_cache(key, key, kc, vc, torch.arange(2, device=DEV))
    torch.cuda.synchronize()
    _check_decode(torch.bfloat16, 128, 8, 2, [40, 7])                   # still works

def test_decode_in_cuda_graph_with_shorter_contexts():
    # The block table must cover the longest replayed context (4096): with rows sized for 4000
    # tokens the kernel would read row 0's blocks 250-255 from row 1 while the reference
    # truncates row 0 to 4000 tokens.
    q, kc, vc, bt, lens = _decode_case(torch.bfloat16, 128, 32, 8, [4096, 10, 2500], seed=9)
    out = torch.empty_like(q)
    ops.paged_attention_decode(out, q, kc, vc, bt, lens, 0.1, 4096)    # warm-up
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        ops.paged_attention_decode(out, q, kc, vc, bt, lens, 0.1, 4096)
    for new in ([4096, 1, 17], [1, 2, 3], [513, 4000, 0]):
        lens.copy_(torch.tensor(new))
        out.fill_(float("nan"))
        g.replay()
        ref = torch.empty(q.shape, dtype=torch.float32, device=DEV)
        reference.paged_attention_decode(ref, q.float(), kc.float(), vc.float(), bt, lens, 0.1, 4096)
        live = lens > 0
        assert not torch.isnan(out).any(), new
        assert row_err(out[live], ref[live]) < 1e-2 and torch.all(out[~live] == 0), new


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("hkv,d", [(8, 128), (2, 64), (1, 256)])
def test_reshape_and_cache(dtype, hkv, d):
    gen = torch.Generator().manual_seed(hkv * d)
    nb, bs, T = 40, 16, 300
    kc, vc = random_caches(nb, bs, hkv, d, dtype, DEV, gen)
    kc2, vc2 = kc.clone(), vc.clone()
    # key/value as views of a fused qkv output: token stride (H + 2*Hkv)*D, heads contiguous
    h = 4 * hkv
    qkv = torch.randn(T, (h + 2 * hkv) * d, generator=gen).to(DEV, dtype)
    key = qkv[:, h * d:(h + hkv) * d].view(T, hkv, d)
    value = qkv[:, (h + hkv) * d:].view(T, hkv, d)
    slots = torch.randperm(nb * bs, generator=gen)[:T]
    slots[::7] = -1                                   # padding tokens
    slots = slots.to(DEV)
    ops.reshape_and_cache(key, value, kc, vc, slots)
    reference.reshape_and_cache(key, value, kc2, vc2, slots)
    torch.cuda.synchronize()
    assert torch.equal(kc, kc2) and torch.equal(vc, vc2)


def test_copy_blocks_all_layers():
    gen = torch.Generator().manual_seed(5)
    layers = 3
    kcs = [random_caches(32, 16, 8, 128, torch.bfloat16, DEV, gen)[0] for _ in range(layers)]
    vcs = [random_caches(32, 16, 8, 128, torch.bfloat16, DEV, gen)[0] for _ in range(layers)]
    ref_k, ref_v = [c.clone() for c in kcs], [c.clone() for c in vcs]
    m = torch.tensor([[0, 9], [1, 10], [4, 31], [30, 2]], device=DEV)
    ops.copy_blocks(kcs, vcs, m)
    reference.copy_blocks(ref_k, ref_v, m)
    torch.cuda.synchronize()
    assert all(torch.equal(a, b) for a, b in zip(kcs + vcs, ref_k + ref_v))


@pytest.mark.parametrize("batched", [False, True])
def test_swap_out_and_in_through_pinned_host(batched):
    gen = torch.Generator().manual_seed(7)
    layers = 2
    dev = [random_caches(64, 16, 8, 128, torch.bfloat16, DEV, gen)[0] for _ in range(layers)]
    host = [torch.randn(48, 16, 8, 128, generator=gen).to(torch.bfloat16).pin_memory() for _ in range(layers)]
    # runs (3,4,5 -> 0,1,2) and scattered blocks (40 -> 10, 7 -> 30, 63 -> 47)
    out_map = torch.tensor([[3, 0], [4, 1], [5, 2], [40, 10], [7, 30], [63, 47]])
    want_host = [h.clone() for h in host]
    for d_, h_ in zip(dev, want_host):
        reference.swap_blocks(d_, h_, out_map)
    if batched:
        ops.swap_blocks_batched(dev, host, out_map)
    else:
        for d_, h_ in zip(dev, host):
            ops.swap_blocks(d_, h_, out_map)
    torch.cuda.synchronize()
    assert all(torch.equal(a, b) for a, b in zip(host, want_host))
    # and back in, to other device blocks
    in_map = torch.tensor([[0, 20], [1, 21], [2, 22], [10, 50], [30, 8], [47, 0]])
    want_dev = [d_.clone() for d_ in dev]
    for h_, d_ in zip(host, want_dev):
        reference.swap_blocks(h_, d_, in_map)
    if batched:
        ops.swap_blocks_batched(host, dev, in_map)
    else:
        for h_, d_ in zip(host, dev):
            ops.swap_blocks(h_, d_, in_map)
    torch.cuda.synchronize()
    assert all(torch.equal(a, b) for a, b in zip(dev, want_dev))


# -- decode split-K workspace (preallocated by the CUDA backend) ---------------------------------

def test_decode_with_preallocated_workspace_matches_and_checks_its_size():
    q, kc, vc, bt, lens = _decode_case(torch.bfloat16, 128, 32, 8, [20000, 5, 3000], seed=11)
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    n = ops.decode_workspace_floats(4, 32, 8, 128, 20000, sms)
    ws = torch.full((n,), float("nan"), device=DEV)
    out = torch.full(q.shape, float("nan"), dtype=q.dtype, device=DEV)
    ops.paged_attention_decode(out, q, kc, vc, bt, lens, 128 ** -0.5, 20000, ws)
    want = torch.empty_like(out)
    ops.paged_attention_decode(want, q, kc, vc, bt, lens, 128 ** -0.5, 20000)
    torch.cuda.synchronize()
    assert torch.equal(out, want)
    with pytest.raises(RuntimeError, match="workspace holds"):
        ops.paged_attention_decode(out, q, kc, vc, bt, lens, 0.1, 20000, ws[:100])
    torch.cuda.synchronize()


# -- varlen paged attention ----------------------------------------------------------------------

def _check_varlen(dtype, d, h, hkv, query_lens, seq_lens, block_size=16, seed=0, q_view=False):
    gen = torch.Generator().manual_seed(seed)
    need = sum(-(-max(L, 1) // block_size) for L in seq_lens)
    nb = need + 7
    kc, vc = random_caches(nb, block_size, hkv, d, dtype, DEV, gen)
    bt = random_block_tables(seq_lens, block_size, nb, gen, DEV)
    # NaN in every cache slot outside the contexts (tails of last blocks, unused blocks): a read
    # past a context's end, or of a future position, shows up as NaN in the output.
    live = torch.zeros(nb * block_size, dtype=torch.bool, device=DEV)
    for i, L in enumerate(seq_lens):
        pos = torch.arange(L, device=DEV)
        live[bt[i, pos // block_size] * block_size + pos % block_size] = True
    kc.view(-1, hkv, d)[~live] = float("nan")
    vc.view(-1, hkv, d)[~live] = float("nan")
    t = sum(query_lens)
    if q_view:
        q = torch.randn(t, (h + 2 * hkv) * d, generator=gen).to(DEV, dtype)[:, :h * d].view(t, h, d)
    else:
        q = torch.randn(t, h, d, generator=gen).to(DEV, dtype)
    lens = torch.tensor(seq_lens, dtype=torch.long, device=DEV)
    qsl = torch.tensor([0] + list(query_lens), dtype=torch.long).cumsum(0).to(DEV)
    out = torch.full((t, h, d), float("nan"), dtype=dtype, device=DEV)
    scale = d ** -0.5
    ops.paged_attention_varlen(out, q, kc, vc, bt, lens, qsl, scale)
    torch.cuda.synchronize()
    ref = torch.empty((t, h, d), dtype=torch.float32, device=DEV)
    reference.paged_attention_varlen(ref, q.float(), kc.float().nan_to_num(), vc.float().nan_to_num(), bt, lens,
                                     qsl, scale)
    assert not torch.isnan(out).any()
    assert row_err(out, ref) < TOL[dtype], (dtype, d, h, hkv, query_lens, seq_lens)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("d", [64, 128, 256])
def test_varlen_dtypes_and_head_sizes(dtype, d):
    # decodes at block boundaries, chunks over prefixes, a whole prompt, an empty item
    _check_varlen(dtype, d, 8, 2, [1, 1, 1, 17, 0, 100, 64], [15, 16, 17, 300, 9, 100, 2000], seed=d)


@pytest.mark.parametrize("h,hkv", [(8, 8), (8, 1), (32, 8), (12, 4), (40, 4), (64, 8)])
def test_varlen_gqa_ratios(h, hkv):
    _check_varlen(torch.bfloat16, 128, h, hkv, [1, 33, 200], [77, 1000, 200], seed=h)


def test_varlen_long_prefix_and_long_chunk():
    # one 1024-token chunk over a 16k-token prefix beside 63 decodes (the agent-turn shape; the
    # fp32 reference materialises [H, 1024, 17408] scores: 2.3 GB)
    _check_varlen(torch.bfloat16, 128, 32, 8, [1024] + [1] * 63, [17408] + [1000 + 37 * i for i in range(63)],
                  seed=3)


@pytest.mark.parametrize("block_size", [8, 32, 128])
def test_varlen_block_sizes_and_strided_q(block_size):
    _check_varlen(torch.float16, 128, 16, 4, [1, 5, block_size + 1], [block_size - 1, block_size + 1, 3000],
                  block_size=block_size, q_view=True)


def test_varlen_bad_arguments_raise():
    gen = torch.Generator().manual_seed(0)
    kc, vc = random_caches(8, 16, 2, 80, torch.bfloat16, DEV, gen)
    q = torch.randn(3, 4, 80, device=DEV, dtype=torch.bfloat16)
    bt = torch.zeros(1, 4, dtype=torch.long, device=DEV)
    lens = torch.tensor([10], device=DEV)
    qsl = torch.tensor([0, 3], device=DEV)
    with pytest.raises(RuntimeError, match="head size 80"):
        torch.ops.continuum_C.paged_attention_varlen(torch.empty_like(q), q, kc, vc, bt, lens, qsl, 0.1)
    kc, vc = random_caches(8, 16, 2, 64, torch.bfloat16, DEV, gen)
    q = torch.randn(3, 4, 64, device=DEV, dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match="query_start_loc"):
        torch.ops.continuum_C.paged_attention_varlen(torch.empty_like(q), q, kc, vc, bt, lens, qsl[:1], 0.1)
    torch.cuda.synchronize()
