"""CPU tests of the op layer: the reference ops against the attention oracle, the CUDA
backend's batching logic (run with the reference ops on CPU), the fallback, graph buckets."""
from __future__ import annotations

import pytest
import torch

from continuum import ops
from continuum.engine.cuda_graph import DecodeGraphRunner, buckets_upto
from continuum.layers import attention_cuda
from continuum.layers.attention import paged_attention_ref, reshape_and_cache
from continuum.ops import reference
from tests.ops.helpers import metadata, random_block_tables, random_caches, rel_err

BS, NB = 16, 64


def _step(query_lens, seq_lens, h, hkv, d, seed=0):
    gen = torch.Generator().manual_seed(seed)
    k_cache, v_cache = random_caches(NB, BS, hkv, d, torch.float32, "cpu", gen)
    bt = random_block_tables(seq_lens, BS, NB, gen, "cpu")
    meta = metadata(query_lens, seq_lens, bt, BS, "cpu")
    t = sum(query_lens)
    q = torch.randn(t, h, d, generator=gen)
    k = torch.randn(t, hkv, d, generator=gen)
    v = torch.randn(t, hkv, d, generator=gen)
    return q, k, v, k_cache, v_cache, meta


@pytest.mark.parametrize("qls,sls", [
    ([1, 1, 7, 20, 1], [33, 1, 40, 20, 16]),       # all in the varlen launch
    ([1, 40, 7, 48, 1, 32], [33, 100, 40, 48, 16, 32]),   # + long chunks by SDPA, over a prefix and whole
])
@pytest.mark.parametrize("h,hkv", [(4, 4), (8, 2), (6, 2)])
def test_backend_forward_matches_reference_on_mixed_batch(h, hkv, qls, sls):
    # decode rows, a 1-token prefill chunk over a prefix, chunks over a prefix, fresh prompts
    q, k, v, kc, vc, meta = _step(qls, sls, h, hkv, 32)
    kc2, vc2 = kc.clone(), vc.clone()
    out = attention_cuda.forward(q, k, v, kc, vc, meta, 0.3)
    reshape_and_cache(k, v, kc2, vc2, meta.slot_mapping)
    ref = paged_attention_ref(q, kc2, vc2, meta, 0.3)
    assert torch.equal(kc, kc2) and torch.equal(vc, vc2)
    assert rel_err(out, ref) < 1e-5


def test_backend_forward_pure_decode_matches_reference():
    q, k, v, kc, vc, meta = _step([1, 1, 1], [17, 16, 100], 8, 2, 64, seed=1)
    kc2, vc2 = kc.clone(), vc.clone()
    out = attention_cuda.forward(q, k, v, kc, vc, meta, 0.125)
    reshape_and_cache(k, v, kc2, vc2, meta.slot_mapping)
    assert rel_err(out, paged_attention_ref(q, kc2, vc2, meta, 0.125)) < 1e-5


def test_reference_decode_zero_length_rows_are_zero():
    q, k, v, kc, vc, meta = _step([1, 1], [5, 9], 4, 2, 16)
    out = torch.full_like(q, float("nan"))
    lens = torch.tensor([5, 0])
    reference.paged_attention_decode(out, q, kc, vc, meta.block_tables, lens, 0.25, 9)
    assert torch.all(out[1] == 0) and not torch.isnan(out[0]).any()


def test_reference_copy_and_swap_blocks():
    gen = torch.Generator().manual_seed(3)
    kcs = [torch.randn(8, 4, 2, 8, generator=gen) for _ in range(2)]
    vcs = [torch.randn(8, 4, 2, 8, generator=gen) for _ in range(2)]
    before = [c.clone() for c in kcs + vcs]
    m = torch.tensor([[0, 5], [1, 0], [3, 7]])          # block 0 is both read and written
    ops.copy_blocks(kcs, vcs, m)
    for c, b in zip(kcs + vcs, before):
        assert torch.equal(c[5], b[0]) and torch.equal(c[0], b[1]) and torch.equal(c[7], b[3])
        assert torch.equal(c[2], b[2])
    host = torch.randn(8, 4, 2, 8, generator=gen)
    ops.swap_blocks(kcs[0], host, torch.tensor([[2, 6], [3, 7]]))
    assert torch.equal(host[6], kcs[0][2]) and torch.equal(host[7], kcs[0][3])


def test_load_falls_back_cleanly_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("CUDA present: the GPU tests cover the kernels")
    assert ops.load() is False and ops.available() is False
    assert "CUDA" in ops.unavailable_reason() or "disabled" in ops.unavailable_reason()
    assert attention_cuda.enabled(torch.device("cpu")) is False


def test_graph_buckets():
    assert buckets_upto(20, (1, 2, 4, 8, 16, 32)) == [1, 2, 4, 8, 16, 20]
    r = DecodeGraphRunner(torch.nn.Identity(), 16, 5000, 20, torch.device("cpu"))
    assert r.batch_buckets[-1] == 20 and r.context_buckets == [1024, 4096, 5000]
    assert r.bucket_for(3, 17) == (4, 1024)
    assert r.bucket_for(20, 4097) == (20, 5000)
    assert r.bucket_for(21, 10) is None and r.bucket_for(1, 5001) is None
    assert r.max_blocks == 313


def test_graph_capture_declines_without_kernels():
    from continuum.models.loader import load_model
    m = load_model("random:tiny", dtype=torch.float32, device=torch.device("cpu"), seed=0).model
    r = DecodeGraphRunner(m, 16, 256, 4, torch.device("cpu"))
    r.capture()                         # no CUDA kernels here (and head size 16): stays eager
    assert r.graphs == {}


@pytest.mark.parametrize("h,hkv", [(4, 4), (8, 2), (6, 2)])
def test_reference_varlen_matches_the_attention_oracle(h, hkv):
    # decodes, a 1-token chunk, chunks over prefixes, a whole prompt: the varlen op's semantics
    # (what the CUDA kernel is checked against) equal paged_attention_ref's on the same step
    qls, sls = [1, 1, 7, 20, 1, 16], [33, 1, 40, 20, 16, 100]
    q, k, v, kc, vc, meta = _step(qls, sls, h, hkv, 32, seed=h)
    reshape_and_cache(k, v, kc, vc, meta.slot_mapping)
    out = torch.full_like(q, float("nan"))
    ops.paged_attention_varlen(out, q, kc, vc, meta.block_tables, meta.seq_lens, meta.query_start_loc, 0.3)
    assert rel_err(out, paged_attention_ref(q, kc, vc, meta, 0.3)) < 1e-5


def test_reference_varlen_skips_empty_items_and_refuses_long_queries():
    q, k, v, kc, vc, meta = _step([3, 2], [5, 9], 4, 2, 16)
    out = torch.full_like(q, float("nan"))
    lens, qsl = torch.tensor([5, 4, 9]), torch.tensor([0, 3, 3, 5])      # item 1: no queries
    bt = torch.cat([meta.block_tables[:1], meta.block_tables])
    reference.paged_attention_varlen(out, q, kc, vc, bt, lens, qsl, 0.25)
    assert not torch.isnan(out).any()
    with pytest.raises(ValueError, match="queries over a context"):
        reference.paged_attention_varlen(out, q, kc, vc, meta.block_tables, torch.tensor([2, 9]),
                                         meta.query_start_loc, 0.25)


def test_decode_workspace_sizing():
    # Llama-8B heads, 256 sequences, 8k context, an H100's 132 SMs: 16 splits of 512 tokens
    # per sequence dominate; 68 MB that the engine reserves before sizing the KV cache.
    assert ops.decode_workspace_floats(256, 32, 8, 128, 8192, 132) == 256 * 16 * 32 * 130
    # batch 1 at 4k tokens on 132 SMs: the planner shrinks partitions (at most 4 * SMs CTAs)
    assert ops.decode_workspace_floats(1, 32, 8, 128, 4096, 132) == 66 * 32 * 130
    assert ops.decode_workspace_floats(256, 32, 8, 128, 128, 132) == 0          # one split always


def test_backend_forward_makes_one_attention_call_per_step_kind(monkeypatch):
    # A mixed step's short items are ONE varlen call (decode rows included); a pure-decode step one decode
    # call that receives the backend's workspace. The real ops run underneath (counted only).
    calls = []

    def counted(name):
        real = getattr(ops, name)

        def call(*args):
            calls.append((name, args[-1]))          # the last argument: workspace / scale
            return real(*args)
        return call

    for name in ("paged_attention_varlen", "paged_attention_decode"):
        monkeypatch.setattr(ops, name, counted(name))
    q, k, v, kc, vc, meta = _step([1, 7, 1, 20], [33, 40, 16, 20], 8, 2, 32)
    attention_cuda.forward(q, k, v, kc, vc, meta, 0.3)
    assert [c[0] for c in calls] == ["paged_attention_varlen"]
    calls.clear()
    # chunks of LONG_CHUNK tokens or more leave the launch (SDPA on tensor cores); the rest stay in one
    long = attention_cuda.LONG_CHUNK
    q, k, v, kc, vc, meta = _step([1, long, 7, long + 5], [33, long + 60, 40, long + 5], 8, 2, 32)
    attention_cuda.forward(q, k, v, kc, vc, meta, 0.3)
    assert [c[0] for c in calls] == ["paged_attention_varlen"]
    calls.clear()
    q, k, v, kc, vc, meta = _step([long, long + 1], [long + 9, long + 1], 8, 2, 32)
    attention_cuda.forward(q, k, v, kc, vc, meta, 0.3)
    assert calls == []
    calls.clear()
    ws = torch.empty(10)
    q, k, v, kc, vc, meta = _step([1, 1], [33, 5], 8, 2, 32)
    attention_cuda.forward(q, k, v, kc, vc, meta, 0.3, ws)
    assert len(calls) == 1 and calls[0][0] == "paged_attention_decode" and calls[0][1] is ws
