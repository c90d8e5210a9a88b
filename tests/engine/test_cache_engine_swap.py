"""CacheEngine swaps: the host-side block bookkeeping (CPU), the CPU path's in-place copies,
and (CUDA only, skipped elsewhere) the copy stream's ordering against the compute stream."""
from __future__ import annotations

import pytest
import torch

from continuum.engine.cache_engine import CacheEngine, blocks_written
from continuum.models.loader import load_model
from continuum.request import Request
from continuum.sampling_params import SamplingParams
from continuum.scheduler.output import ScheduledRequest, SchedulerOutput


def _chunk(start: int, n: int, blocks: list[int]) -> ScheduledRequest:
    req = Request("r", list(range(start + n)), SamplingParams(), 0.0)
    return ScheduledRequest(request=req, start=start, num_new_tokens=n, block_ids=blocks, samples=True)


def test_blocks_written_are_the_blocks_of_the_new_positions():
    sched = SchedulerOutput(scheduled=[
        _chunk(0, 16, [7, 9]),          # positions 0..15: block 7 only
        _chunk(33, 1, [1, 2, 3, 4]),    # a decode at position 33: third block
        _chunk(15, 2, [5, 6, 8]),       # positions 15, 16 straddle blocks 5 and 6
        _chunk(4, 0, [11]),             # nothing new
    ])
    assert blocks_written(sched, 16) == {7, 3, 5, 6}
    assert blocks_written(SchedulerOutput(), 16) == set()


def _engine(device: str) -> CacheEngine:
    model = load_model("random:tiny", dtype=torch.float32, device=torch.device(device), seed=0).model
    return CacheEngine(model, 8, 4, torch.float32, torch.device(device), num_host_blocks=6)


def _fill(ce: CacheEngine, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for t in ce.k_caches + ce.v_caches:
        t.copy_(torch.randn(t.shape, generator=gen))


def test_cpu_swap_round_trip_in_place():
    ce = _engine("cpu")
    _fill(ce, 0)
    before = [t.clone() for t in ce.k_caches + ce.v_caches]
    ce.swap([(2, 0), (5, 3)], [])
    ce.swap([], [(0, 6), (3, 1)])
    assert not ce.pending_swap_out                  # nothing deferred on the CPU
    for t, b in zip(ce.k_caches + ce.v_caches, before):
        assert torch.equal(t[6], b[2]) and torch.equal(t[1], b[5]) and torch.equal(t[0], b[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_swap_out_is_ordered_before_a_write_to_its_blocks():
    ce = _engine("cuda")
    _fill(ce, 1)
    before = [t.clone() for t in ce.k_caches + ce.v_caches]
    ce.swap([(2, 0), (5, 3)], [], writes={7})     # this step writes elsewhere: no wait yet
    assert ce.pending_swap_out
    ce.before_compute({4})                        # still elsewhere (or already done)
    ce.before_compute({5})                        # a step reuses block 5: the stream waits
    assert not ce.pending_swap_out
    for t in ce.k_caches + ce.v_caches:           # the step's KV write, on the compute stream
        t[5].fill_(-1.0)
        t[2].fill_(-2.0)
    torch.cuda.synchronize()
    for h, b in zip(ce.host_k + ce.host_v, before):
        assert torch.equal(h[0], b[2].cpu()) and torch.equal(h[3], b[5].cpu())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_swap_in_is_visible_to_the_compute_stream():
    ce = _engine("cuda")
    for h in ce.host_k + ce.host_v:
        h.copy_(torch.arange(h.numel(), dtype=h.dtype).view(h.shape))
    ce.swap([], [(4, 1), (5, 7)], writes={1, 7})
    got = [t[[1, 7]].sum().item() for t in ce.k_caches]   # queued on the compute stream
    want = [h[[4, 5]].sum().item() for h in ce.host_k]
    assert got == want and not ce.pending_swap_out
