"""The CPU decode kernel (csrc/cpu) against the torch reference on fresh random inputs."""
import math

import pytest
import torch

from continuum.layers import cpu_kernels
from continuum.layers.attention import AttentionMetadata, paged_attention_ref

mod = cpu_kernels.load()
pytestmark = pytest.mark.skipif(mod is None, reason=f"CPU kernel did not build: {cpu_kernels.failure()}")


def make_case(seq_lens, H, Hkv, D, bs=16, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    nblocks = sum(-(-n // bs) for n in seq_lens) + 3
    kc = torch.randn(nblocks, bs, Hkv, D, generator=g).to(dtype)
    vc = torch.randn(nblocks, bs, Hkv, D, generator=g).to(dtype)
    perm = torch.randperm(nblocks, generator=g).tolist()      # scattered, non-contiguous blocks
    tables, i = [], 0
    for n in seq_lens:
        k = -(-n // bs)
        tables.append(perm[i:i + k])
        i += k
    width = max(len(t) for t in tables)
    bt = torch.tensor([t + [0] * (width - len(t)) for t in tables])
    q = torch.randn(len(seq_lens), H, D, generator=g).to(dtype)
    meta = AttentionMetadata(slot_mapping=torch.zeros(len(seq_lens), dtype=torch.long), block_tables=bt,
                             seq_lens=torch.tensor(seq_lens), query_start_loc=torch.arange(len(seq_lens) + 1),
                             seq_lens_list=list(seq_lens), query_lens_list=[1] * len(seq_lens), block_size=bs)
    return q, kc, vc, meta


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2), (torch.float16, 2e-3)])
@pytest.mark.parametrize("H,Hkv,D", [(4, 4, 64), (12, 4, 64), (8, 2, 128), (9, 3, 64), (4, 2, 16), (2, 1, 80)])
def test_decode_kernel_matches_reference(dtype, tol, H, Hkv, D):
    seq_lens = [1, 15, 16, 17, 33, 300]          # block boundaries and a longer context
    q, kc, vc, meta = make_case(seq_lens, H, Hkv, D, dtype=dtype)
    scale = 1 / math.sqrt(D)
    ref = paged_attention_ref(q.float(), kc.float(), vc.float(), meta, scale)
    got = mod.paged_attention_decode(q, kc, vc, meta.block_tables, meta.seq_lens, scale)
    assert got.dtype == dtype and got.shape == q.shape
    assert torch.allclose(got.float(), ref, atol=tol, rtol=tol), (got.float() - ref).abs().max()


def test_padding_blocks_are_never_read():
    q, kc, vc, meta = make_case([5, 40], 4, 2, 64)
    scale = 0.125
    want = mod.paged_attention_decode(q, kc, vc, meta.block_tables, meta.seq_lens, scale)
    # poison every block not in a table, and the unused tail of each sequence's last block
    used = set(meta.block_tables[0, :1].tolist()) | set(meta.block_tables[1, :3].tolist())
    for b in range(kc.shape[0]):
        if b not in used:
            kc[b] = float("nan")
            vc[b] = float("nan")
    kc[meta.block_tables[0, 0], 5:] = float("nan")
    vc[meta.block_tables[1, 2], 8:] = float("nan")
    got = mod.paged_attention_decode(q, kc, vc, meta.block_tables, meta.seq_lens, scale)
    assert torch.equal(got, want)


# The AVX-512 path (head sizes 32/64/128/256 where the build targets AVX-512) walks keys in
# chunks of 16 that may span cache blocks, tiles heads by 4 in the V pass and reduces 16 keys
# per transposed sum: group sizes around the tile, block sizes below/at/above the chunk, and
# contexts that end mid-chunk and mid-block.
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2), (torch.float16, 2e-3)])
@pytest.mark.parametrize("group", [1, 3, 4, 5, 8])
@pytest.mark.parametrize("D", [32, 64, 128, 256])
@pytest.mark.parametrize("bs", [8, 16, 32])
def test_decode_kernel_groups_heads_blocks(dtype, tol, group, D, bs):
    Hkv = 2
    seq_lens = [1, 7, 16, 31, 49, 1000]
    q, kc, vc, meta = make_case(seq_lens, group * Hkv, Hkv, D, bs=bs, dtype=dtype, seed=group + D + bs)
    scale = 1 / math.sqrt(D)
    ref = paged_attention_ref(q.float(), kc.float(), vc.float(), meta, scale)
    got = mod.paged_attention_decode(q, kc, vc, meta.block_tables, meta.seq_lens, scale)
    assert torch.allclose(got.float(), ref, atol=tol, rtol=tol), (got.float() - ref).abs().max()


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_decode_kernel_long_context_partial_block(dtype, tol):
    """8k+ contexts ending mid-block (SmolLM2 and Llama-8B head shapes), with sharply peaked
    scores so an error in the running max or the masked tail would show."""
    for H, Hkv, D in [(9, 3, 64), (32, 8, 128)]:
        q, kc, vc, meta = make_case([8192 + 5, 4099], H, Hkv, D, dtype=dtype, seed=H)
        q = (q.float() * 4).to(dtype)
        scale = 1 / math.sqrt(D)
        ref = paged_attention_ref(q.float(), kc.float(), vc.float(), meta, scale)
        got = mod.paged_attention_decode(q, kc, vc, meta.block_tables, meta.seq_lens, scale)
        assert torch.allclose(got.float(), ref, atol=tol, rtol=tol), (got.float() - ref).abs().max()
