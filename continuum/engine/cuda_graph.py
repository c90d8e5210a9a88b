"""CUDA graphs for decode steps: one graph per (batch-size bucket, context bucket).

A decode step of an 8B model launches ~700 kernels; eagerly each costs a few microseconds of
CPU, which at batch 1 is as long as the GPU work. Replaying a captured graph removes that.

What is captured: ``model(input_ids, positions)`` under a pure-decode step of the attention
backend (or, with no backend bound, the global forward context) whose
tensors are *static buffers* of this class; the sampler stays outside. Replay copies the live
batch into the buffers and pads it to the bucket:

- padded rows: ``slot_mapping = -1`` (no cache write), ``seq_lens = 0`` (the decode kernel
  writes zeros, reads nothing), ``input_ids = positions = 0``;
- the decode kernel's split count is fixed at capture from the context bucket, so a graph is
  correct for every batch whose longest context is <= its bucket (CTAs past a sequence's end
  exit at once); context buckets keep those idle CTAs few.

Invariants: capture and replay on the same stream/device; the KV caches bound to the model's
attention layers never move after capture (the CacheEngine allocates them once); the
attention layers must use the CUDA backend (the reference one synchronises with the host,
which capture forbids).
"""
from __future__ import annotations

import bisect
import logging
import time
from typing import TYPE_CHECKING

import torch

from continuum.layers.attention import AttentionMetadata, get_forward_context, set_forward_context

if TYPE_CHECKING:
    from continuum.layers.attention_backend import AttentionBackend

logger = logging.getLogger(__name__)

DEFAULT_BATCH_BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256)
DEFAULT_CONTEXT_BUCKETS = (1024, 4096, 16384, 65536, 131072)


def buckets_upto(limit: int, defaults: tuple[int, ...]) -> list[int]:
    """The default buckets below ``limit``, plus ``limit`` itself as the last bucket."""
    out = [b for b in defaults if b < limit]
    return out + [limit]


class DecodeGraphRunner:
    """Owns the static input buffers and the captured graphs of one model.

    Use: ``runner.capture()`` once after the KV cache is bound; then per step
    ``if runner.can_run(meta): hidden = runner.run(ids, positions, meta)``.
    """

    def __init__(self, model: torch.nn.Module, block_size: int, max_model_len: int, max_num_seqs: int,
                 device: torch.device, batch_buckets: list[int] | None = None,
                 context_buckets: list[int] | None = None, attention: "AttentionBackend | None" = None):
        self.model = model
        # The backend bound to the model's layers (the engine's): captures run under its step();
        # None: a model with no backend bound, run under the global forward context.
        self.attention = attention
        self.block_size = block_size
        self.max_model_len = max_model_len
        self.device = device
        self.batch_buckets = sorted(batch_buckets or buckets_upto(max_num_seqs, DEFAULT_BATCH_BUCKETS))
        self.context_buckets = sorted(context_buckets or buckets_upto(max_model_len, DEFAULT_CONTEXT_BUCKETS))
        n, self.max_blocks = self.batch_buckets[-1], -(-self.context_buckets[-1] // block_size)
        kw = dict(dtype=torch.long, device=device)
        self.input_ids = torch.zeros(n, **kw)
        self.positions = torch.zeros(n, **kw)
        self.slot_mapping = torch.full((n,), -1, **kw)
        self.block_tables = torch.zeros(n, self.max_blocks, **kw)
        self.seq_lens = torch.zeros(n, **kw)
        self.query_start_loc = torch.arange(n + 1, **kw)
        self.graphs: dict[tuple[int, int], torch.cuda.CUDAGraph] = {}
        self.outputs: dict[tuple[int, int], torch.Tensor] = {}
        self._pool = None

    def _meta(self, batch: int, context: int) -> AttentionMetadata:
        # seq_lens_list is only read for max(): it fixes the kernel's split count to the bucket.
        return AttentionMetadata(
            slot_mapping=self.slot_mapping[:batch], block_tables=self.block_tables[:batch],
            seq_lens=self.seq_lens[:batch], query_start_loc=self.query_start_loc[:batch + 1],
            seq_lens_list=[context] * batch, query_lens_list=[1] * batch, block_size=self.block_size)

    @torch.inference_mode()
    def capture(self) -> None:
        """Capture every (batch, context) bucket, largest first so that smaller graphs reuse
        the memory pool of the largest. Costs about one eager step per graph."""
        from continuum import ops
        from continuum.layers.attention import Attention

        unsupported = sorted({(a.head_size, str(a.k_cache.dtype if a.k_cache is not None else None))
                              for a in self.model.modules() if isinstance(a, Attention)
                              and (a.head_size not in ops.DECODE_HEAD_SIZES or a.k_cache is None
                                   or a.k_cache.dtype not in ops.DECODE_DTYPES)})
        if unsupported or not ops.available():
            # The reference fallback synchronises with the host, which capture forbids: stay eager.
            logger.warning("decode CUDA graphs disabled: the kernels do not cover (head size, KV "
                           "dtype) %s or are unavailable (%s)", unsupported, ops.unavailable_reason())
            return
        t0 = time.perf_counter()
        self.slot_mapping.fill_(-1)
        self.seq_lens.zero_()
        for ctx in reversed(self.context_buckets):
            for b in reversed(self.batch_buckets):
                meta = self._meta(b, ctx)
                with self._step(meta):                     # warm-up: lazy inits, kernel builds
                    self.model(self.input_ids[:b], self.positions[:b])
                torch.cuda.synchronize(self.device)
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g, pool=self._pool), self._step(meta):
                    out = self.model(self.input_ids[:b], self.positions[:b])
                if self._pool is None:
                    self._pool = g.pool()
                self.graphs[(b, ctx)], self.outputs[(b, ctx)] = g, out
        torch.cuda.synchronize(self.device)
        logger.info("captured %d decode graphs (batch %s x context %s) in %.1f s", len(self.graphs),
                    self.batch_buckets, self.context_buckets, time.perf_counter() - t0)

    def _step(self, meta: AttentionMetadata):
        return self.attention.step(meta) if self.attention is not None else set_forward_context(meta)

    def current_metadata(self) -> AttentionMetadata | None:
        """The metadata of the step being run: the backend's, else the global context."""
        if self.attention is not None:
            return self.attention.meta
        return get_forward_context()

    def bucket_for(self, num_seqs: int, max_seq_len: int) -> tuple[int, int] | None:
        i = bisect.bisect_left(self.batch_buckets, num_seqs)
        j = bisect.bisect_left(self.context_buckets, max_seq_len)
        if i == len(self.batch_buckets) or j == len(self.context_buckets):
            return None
        return self.batch_buckets[i], self.context_buckets[j]

    def can_run(self, meta: AttentionMetadata) -> bool:
        return (bool(self.graphs) and meta.is_pure_decode
                and meta.block_tables.shape[1] <= self.max_blocks
                and self.bucket_for(meta.num_seqs, max(meta.seq_lens_list)) in self.graphs)

    @torch.inference_mode()
    def run(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        """Replay the bucket's graph on this batch; returns hidden ``[num_seqs, hidden]`` (a view
        of the graph's output buffer: consume it before the next replay)."""
        n = meta.num_seqs
        key = self.bucket_for(n, max(meta.seq_lens_list))
        b = key[0]
        self.input_ids[:n].copy_(input_ids)
        self.positions[:n].copy_(positions)
        self.slot_mapping[:n].copy_(meta.slot_mapping)
        self.seq_lens[:n].copy_(meta.seq_lens)
        self.block_tables[:n, :meta.block_tables.shape[1]].copy_(meta.block_tables)
        if b > n:
            self.input_ids[n:b].zero_()
            self.positions[n:b].zero_()
            self.slot_mapping[n:b].fill_(-1)
            self.seq_lens[n:b].zero_()
        self.graphs[key].replay()
        return self.outputs[key][:n]


class GraphedModel(torch.nn.Module):
    """The model, with pure-decode forwards replayed from ``graphs`` when a bucket fits.

    A drop-in for the model the ModelRunner calls (``model(ids, positions)`` under a forward
    context, ``compute_logits``): eager for prefill/mixed batches and batches no graph covers.
    """

    def __init__(self, model: torch.nn.Module, graphs: DecodeGraphRunner):
        super().__init__()
        self.inner = model
        self.graphs = graphs
        self.num_replays = 0

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        meta = self.graphs.current_metadata()
        if meta is not None and self.graphs.can_run(meta):
            self.num_replays += 1
            return self.graphs.run(input_ids, positions, meta)
        return self.inner(input_ids, positions)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.inner.compute_logits(hidden)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.inner, name)     # config, vocab_size, attention_layers, ...
