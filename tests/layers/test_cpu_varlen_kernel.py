"""The CPU varlen kernel (csrc/cpu, ``paged_attention_varlen``) and its planner against the
torch reference, on fresh random paged caches (scattered blocks, junk in every unused slot)."""
import math

import pytest
import torch

from continuum.layers import cpu_kernels
from continuum.layers.attention import paged_attention_ref
from tests.ops.helpers import metadata, random_block_tables, random_caches

mod = cpu_kernels.load()
pytestmark = pytest.mark.skipif(mod is None, reason=f"CPU kernel did not build: {cpu_kernels.failure()}")

BS = 16
TOL = {torch.float32: 2e-5, torch.bfloat16: 2e-2, torch.float16: 3e-3}


def make_case(query_lens, seq_lens, H, Hkv, D, dtype, seed=0, bs=BS):
    gen = torch.Generator().manual_seed(seed)
    nblocks = sum(-(-s // bs) for s in seq_lens) + 5
    kc, vc = random_caches(nblocks, bs, Hkv, D, dtype, "cpu", gen)
    bt = random_block_tables(seq_lens, bs, nblocks, gen, "cpu")
    meta = metadata(query_lens, seq_lens, bt, bs, "cpu")
    q = torch.randn(sum(query_lens), H, D, generator=gen).to(dtype)
    return q, kc, vc, meta


def check(query_lens, seq_lens, H, Hkv, D, dtype, tile=None, q_gain=1.0, **kw):
    """Kernel vs reference. tile: plan with this query tile (default: the kernel plans itself);
    q_gain: multiplies q (large values make the softmax peaky, so running maxima move a lot)."""
    q, kc, vc, meta = make_case(query_lens, seq_lens, H, Hkv, D, dtype, **kw)
    q = (q.float() * q_gain).to(dtype)
    scale = 1 / math.sqrt(D)
    want = paged_attention_ref(q.float(), kc.float(), vc.float(), meta, scale)
    work = None if tile is None else mod.varlen_plan(meta.seq_lens, meta.query_start_loc, Hkv, H // Hkv, 2, tile)
    got = mod.paged_attention_varlen(q, kc, vc, meta.block_tables, meta.seq_lens, meta.query_start_loc, scale,
                                     work)
    assert got.dtype == dtype and got.shape == q.shape
    err = (got.float() - want).abs().max().item()
    assert err <= TOL[dtype], f"max abs error {err} (tolerance {TOL[dtype]})"


# A prefill chunk over a cached prefix, a whole prompt, decodes, and lengths either side of
# block multiples, in one batch.
MIXED = ([1, 17, 33, 5, 1, 64, 16, 3], [1, 17, 100, 300, 40, 64, 48, 31])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("H,Hkv,D", [(4, 4, 64), (8, 4, 64), (8, 2, 128), (16, 2, 64), (9, 3, 64), (4, 1, 80)])
def test_mixed_batch_matches_reference(dtype, H, Hkv, D):
    """GQA groups 1, 2, 3, 4, 8; head sizes with and without a compiled specialisation."""
    check(*MIXED, H, Hkv, D, dtype)


# Prefill chunks over cached prefixes of lengths that are neither block nor 16-key-chunk
# multiples (the causal diagonal falls mid-chunk), a chunk over a one-token prefix, decodes, a
# whole prompt; with explicit query tiles, tiles cross block boundaries and one item's rows
# (tile x group) fill several 16-row vector tiles, the last one partly. On AVX-512 builds this
# is the vectorised item kernel for fp32 and bf16 at head sizes 64 and 128 (one-query items:
# the decode task), elsewhere the portable one.
CACHED = ([37, 1, 20, 5, 64, 1, 19], [66, 70, 20, 128, 128, 1, 20])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("D", [64, 128])
@pytest.mark.parametrize("H,Hkv", [(4, 4), (9, 3), (8, 2), (16, 2)])
@pytest.mark.parametrize("tile", [3, 7, 40])
def test_query_tiles_over_cached_prefixes(dtype, D, H, Hkv, tile):
    """GQA groups 1, 3, 4, 8."""
    check(*CACHED, H, Hkv, D, dtype, tile=tile, seed=tile + H)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bs", [8, 24, 32])
def test_chunks_that_do_not_fill_a_block(dtype, bs):
    """Block size 8: every key chunk is half a vector; 24: a full chunk then an 8-key one per
    block; 32: two chunks per block."""
    check(*CACHED, 12, 4, 64, dtype, tile=16, bs=bs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("D", [64, 128])
def test_peaky_softmax(dtype, D):
    """q x 3: scores with a standard deviation of 3, so each row's running max jumps between
    chunks and the accumulator rescaling carries the result. (Larger gains push the portable
    kernel's fp32 error at D = 128 to the 2e-5 tolerance: 2.05e-5 at x 6, 7.6e-6 at x 3.)"""
    check([300, 1, 40], [700, 513, 40], 8, 2, D, dtype, tile=64, q_gain=3.0)


@pytest.mark.parametrize("sl", [15, 16, 17, 31, 32, 33, 47, 48, 49])
def test_block_boundaries(sl):
    """Context lengths around block multiples, as decode, chunk and whole prompt at once."""
    check([1, sl // 2 + 1, sl], [sl, sl, sl], 8, 2, 64, torch.float32, seed=sl)


@pytest.mark.parametrize("bs", [8, 32])
def test_other_block_sizes(bs):
    check(*MIXED, 8, 2, 64, torch.float32, bs=bs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_long_context(dtype):
    """A 4k context: a 200-token chunk over ~3.9k cached tokens, a 4k decode, a 1k prompt."""
    check([200, 1, 1024], [4096, 4096, 1024], 12, 4, 64, dtype)


# Results under different plans agree to fp32 rounding, not bit for bit: on AVX-512 builds a
# one-query item runs the exact two-pass decode path and a tile of several queries the online
# softmax, so the tile size changes which one a query takes (measured differences ~1e-6 on
# outputs of magnitude ~3).
PLAN_ATOL = 4e-6


def test_plan_and_workspace_do_not_change_the_result():
    q, kc, vc, meta = make_case(*MIXED, 8, 2, 64, torch.float32)
    args = (q, kc, vc, meta.block_tables, meta.seq_lens, meta.query_start_loc, 0.125)
    alone = mod.paged_attention_varlen(*args)
    for tile in (1, 4, 32, 0):      # 0: the default tile
        work = mod.varlen_plan(meta.seq_lens, meta.query_start_loc, 2, 4, 3, tile)
        ws = torch.empty(3, mod.varlen_workspace_floats(tile, 4, 64))
        assert torch.allclose(mod.paged_attention_varlen(*args, work, ws), alone, atol=PLAN_ATOL, rtol=0)
    # a workspace too small for the plan is replaced, not overrun
    work = mod.varlen_plan(meta.seq_lens, meta.query_start_loc, 2, 4, 1, 32)
    assert torch.allclose(mod.paged_attention_varlen(*args, work, torch.empty(1, 8)), alone, atol=PLAN_ATOL,
                          rtol=0)


def test_plan_covers_every_query_once_longest_first():
    qls, sls = [512, 1, 1, 7], [16896, 4000, 20, 7]
    qsl = torch.tensor([0, 512, 513, 514, 521])
    work = mod.varlen_plan(torch.tensor(sls), qsl, 3, 3, 4, 32)
    seen = torch.zeros(sum(qls), 3, dtype=torch.int)
    costs = []
    for seq, kvh, q0, nq in work.tolist():
        seen[qsl[seq] + q0:qsl[seq] + q0 + nq, kvh] += 1
        costs.append(nq * (sls[seq] - qls[seq] + q0 + nq))
    assert seen.eq(1).all()
    assert costs == sorted(costs, reverse=True)
    # The long chunk dominates this step: it is split so no item holds more than 1/(2*threads)
    # of the step's cost (the planner's balance rule), so no thread serialises the step.
    assert max(costs) * 2 * 4 <= sum(costs) * 1.05


def test_padding_blocks_and_later_tokens_are_never_read():
    q, kc, vc, meta = make_case([3, 1], [20, 40], 4, 2, 64, torch.float32)
    args = (meta.block_tables, meta.seq_lens, meta.query_start_loc, 0.125)
    want = mod.paged_attention_varlen(q, kc, vc, *args)
    used = {b: n for row, sl in zip(meta.block_tables.tolist(), meta.seq_lens.tolist())
            for i, b in enumerate(row[:-(-sl // BS)]) for n in [min(BS, sl - i * BS)]}
    for b in range(kc.shape[0]):
        n = used.get(b, 0)
        kc[b, n:] = float("nan")       # every slot past its sequence's end, and unowned blocks
        vc[b, n:] = float("nan")
    got = mod.paged_attention_varlen(q, kc, vc, *args)
    assert torch.equal(got, want)


def test_bad_metadata_is_a_clear_error():
    q, kc, vc, meta = make_case([4], [8], 4, 2, 64, torch.float32)
    with pytest.raises(RuntimeError, match="query_len 4 must lie in"):
        mod.paged_attention_varlen(q, kc, vc, meta.block_tables, torch.tensor([3]), meta.query_start_loc, 0.1)
    with pytest.raises(RuntimeError, match="share a dtype"):
        mod.paged_attention_varlen(q.double(), kc, vc, meta.block_tables, meta.seq_lens, meta.query_start_loc, 0.1)
