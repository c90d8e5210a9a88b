"""CUDA attention backend: the csrc kernels for the KV write, decode and every other step.

Same contract as the torch reference in :mod:`continuum.layers.attention` (``forward`` here ==
``reshape_and_cache`` + ``paged_attention_ref`` there), so the reference stays the oracle:

- every token's K/V is written at ``slot_mapping`` first (``< 0`` skips it);
- a pure-decode step runs the paged decode kernel (split-K over long contexts; CUDA graphs
  capture it);
- any other step runs ONE varlen paged-attention launch for all its sequences that have
  fewer than ``LONG_CHUNK`` new tokens (decodes, short chunks), reading K/V in place from the
  paged cache (no gather, no repeat per GQA group, no dense mask; docs/kernels.md §2);
- a chunk of ``LONG_CHUNK`` tokens or more is compute-bound, and the varlen kernel computes on
  CUDA cores, so it runs PyTorch SDPA (FlashAttention on tensor cores): directly on the new
  K/V when the chunk is its whole context, else on its K/V gathered from the paged cache with
  a bottom-right-aligned causal mask.

On CPU tensors, or without the built extension, the same code runs with the torch reference
ops (continuum.ops falls back), which is how the CPU tests exercise this module.
Graph capture: neither path synchronises with the host (``seq_lens_list`` is host data, and
the varlen grid is sized from tensor shapes), so :mod:`continuum.engine.cuda_graph` can capture
decode steps.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from continuum import ops

if TYPE_CHECKING:
    from continuum.layers.attention import AttentionMetadata


def enabled(device: torch.device) -> bool:
    """True where this backend should replace the reference: a CUDA device with built kernels."""
    return device.type == "cuda" and ops.available()


# New tokens from which a chunk leaves the varlen launch for SDPA. From the counting in
# docs/kernels.md §2 (Llama-8B heads, H100/H200): the varlen kernel on CUDA cores spends
# ~1.7 us per query token over a 3k context, the gather + SDPA path a fixed ~40 us (launches
# and the gather) plus ~0.1 us per token on tensor cores, so they cross near 25 tokens (16 at
# 16k). An estimate until gpu_check.sh's bench_varlen.py measures both on a device.
LONG_CHUNK = 32


def forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor,
            v_cache: torch.Tensor, meta: "AttentionMetadata", scale: float,
            workspace: torch.Tensor | None = None) -> torch.Tensor:
    """q ``[T, H, D]``, k/v ``[T, Hkv, D]`` (this step's new tokens) -> out ``[T, H, D]``.
    ``workspace``: the decode kernel's preallocated split-K scratch (None: per call)."""
    ops.reshape_and_cache(k, v, k_cache, v_cache, meta.slot_mapping)
    out = torch.empty_like(q)
    if meta.is_pure_decode:
        ops.paged_attention_decode(out, q, k_cache, v_cache, meta.block_tables, meta.seq_lens, scale,
                                   max(meta.seq_lens_list), workspace)
        return out
    mixed(out, q, k, v, k_cache, v_cache, meta.block_tables, meta.seq_lens, meta.query_start_loc,
          meta.query_lens_list, meta.seq_lens_list, scale)
    return out


def mixed(out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor,
          v_cache: torch.Tensor, block_tables: torch.Tensor, seq_lens: torch.Tensor,
          query_start_loc: torch.Tensor, qls: list[int], sls: list[int], scale: float) -> None:
    """A step that is not pure decode (K/V already in the cache; ``qls``/``sls``: host copies
    of the query and context lengths): short items in one varlen launch, long chunks by SDPA."""
    long = [i for i, ql in enumerate(qls) if ql >= LONG_CHUNK]
    if not long:
        ops.paged_attention_varlen(out, q, k_cache, v_cache, block_tables, seq_lens, query_start_loc, scale)
        return
    starts = [0]
    for ql in qls:
        starts.append(starts[-1] + ql)
    short = [i for i, ql in enumerate(qls) if 0 < ql < LONG_CHUNK]
    if short:
        _varlen_rows(out, q, k_cache, v_cache, block_tables, seq_lens, query_start_loc.dtype, scale,
                     short, starts)
    for i in long:
        s, e = starts[i], starts[i + 1]
        if qls[i] == sls[i]:
            out[s:e] = sdpa_causal(q[s:e], k[s:e], v[s:e], scale)
        else:
            out[s:e] = prefill_over_cache(q[s:e], k_cache, v_cache, block_tables[i], sls[i], scale)


def _varlen_rows(out, q, k_cache, v_cache, block_tables, seq_lens, loc_dtype, scale,
                 items: list[int], starts: list[int]) -> None:
    """The short items of a step with long chunks: their rows packed, one varlen launch."""
    dev = q.device
    rows = [r for i in items for r in range(starts[i], starts[i + 1])]
    loc = [0]
    for i in items:
        loc.append(loc[-1] + starts[i + 1] - starts[i])
    tok = torch.tensor(rows, device=dev)
    seq = torch.tensor(items, device=dev)
    o = torch.empty((len(rows),) + tuple(q.shape[1:]), dtype=q.dtype, device=dev)
    ops.paged_attention_varlen(o, q.index_select(0, tok), k_cache, v_cache, block_tables.index_select(0, seq),
                               seq_lens.index_select(0, seq), torch.tensor(loc, dtype=loc_dtype, device=dev), scale)
    out.index_copy_(0, tok, o)


def _expand_kv(x: torch.Tensor, group: int) -> torch.Tensor:
    """[1, Hkv, L, D] -> [1, Hkv*group, L, D] (query head h uses KV head h // group)."""
    return x if group == 1 else x.repeat_interleave(group, dim=1)


def sdpa_causal(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Plain causal attention of a whole-context chunk: [ql, H, D] x [ql, Hkv, D] -> [ql, H, D]."""
    g = q.shape[1] // k.shape[1]
    qi, ki, vi = q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None]
    o = F.scaled_dot_product_attention(qi, _expand_kv(ki, g), _expand_kv(vi, g), is_causal=True, scale=scale)
    return o[0].transpose(0, 1)


def prefill_over_cache(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                       block_table: torch.Tensor, sl: int, scale: float) -> torch.Tensor:
    """A chunk of ql new tokens (already cached) attending to its sequence's first sl tokens."""
    from torch.nn.attention.bias import causal_lower_right

    ql = q.shape[0]
    bs = k_cache.shape[1]
    nb = (sl + bs - 1) // bs
    blocks = block_table[:nb]
    k = k_cache.index_select(0, blocks).flatten(0, 1)[:sl].to(q.dtype)     # [sl, Hkv, D]
    v = v_cache.index_select(0, blocks).flatten(0, 1)[:sl].to(q.dtype)
    g = q.shape[1] // k.shape[1]
    ki = _expand_kv(k.transpose(0, 1)[None], g)
    vi = _expand_kv(v.transpose(0, 1)[None], g)
    # Query j sits at absolute position sl - ql + j: a lower-right causal mask, which SDPA
    # serves with its flash / memory-efficient kernels (a dense mask would not).
    o = F.scaled_dot_product_attention(q.transpose(0, 1)[None], ki, vi,
                                       attn_mask=causal_lower_right(ql, sl), scale=scale)
    return o[0].transpose(0, 1)
