"""CUDA attention backend: the csrc kernels for decode and the KV write, SDPA for prefill.

Same contract as the torch reference in :mod:`continuum.layers.attention` (``forward`` here ==
``reshape_and_cache`` + ``paged_attention_ref`` there), so the reference stays the oracle:

- every token's K/V is written at ``slot_mapping`` first (``< 0`` skips it);
- rows with one query token (decodes, and 1-token prefill chunks) run the paged decode kernel
  in one launch, whatever else the batch holds;
- longer chunks run PyTorch SDPA (FlashAttention on the GPU): directly on the new K/V when the
  chunk is the whole context, else on the sequence's K/V gathered from the paged cache with a
  bottom-right-aligned causal mask (docs/kernels.md §2 explains why a gather, for now).

On CPU tensors, or without the built extension, the same code runs with the torch reference
ops (continuum.ops falls back), which is how the CPU tests exercise this module.
Graph capture: a pure-decode batch does no host synchronisation here (``seq_lens_list`` is
host data), so :mod:`continuum.engine.cuda_graph` can capture it.
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


def forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor,
            v_cache: torch.Tensor, meta: "AttentionMetadata", scale: float) -> torch.Tensor:
    """q ``[T, H, D]``, k/v ``[T, Hkv, D]`` (this step's new tokens) -> out ``[T, H, D]``."""
    ops.reshape_and_cache(k, v, k_cache, v_cache, meta.slot_mapping)
    out = torch.empty_like(q)
    if meta.is_pure_decode:
        ops.paged_attention_decode(out, q, k_cache, v_cache, meta.block_tables, meta.seq_lens, scale,
                                   max(meta.seq_lens_list))
        return out
    starts = [0]
    for ql in meta.query_lens_list:
        starts.append(starts[-1] + ql)
    single = [i for i, ql in enumerate(meta.query_lens_list) if ql == 1]
    if single:
        _decode_rows(out, q, k_cache, v_cache, meta, scale, single, starts)
    for i, (ql, sl) in enumerate(zip(meta.query_lens_list, meta.seq_lens_list)):
        if ql == 1:
            continue
        s, e = starts[i], starts[i] + ql
        if ql == sl:
            out[s:e] = _sdpa_causal(q[s:e], k[s:e], v[s:e], scale)
        else:
            out[s:e] = _prefill_over_cache(q[s:e], k_cache, v_cache, meta.block_tables[i], sl, scale)
    return out


def _decode_rows(out, q, k_cache, v_cache, meta, scale, rows: list[int], starts: list[int]) -> None:
    """The 1-token rows of a mixed batch through the decode kernel, in one launch."""
    dev = q.device
    tok = torch.tensor([starts[i] for i in rows], device=dev)
    seq = torch.tensor(rows, device=dev)
    o = torch.empty((len(rows),) + tuple(q.shape[1:]), dtype=q.dtype, device=dev)
    ops.paged_attention_decode(o, q.index_select(0, tok), k_cache, v_cache,
                               meta.block_tables.index_select(0, seq), meta.seq_lens.index_select(0, seq),
                               scale, max(meta.seq_lens_list[i] for i in rows))
    out.index_copy_(0, tok, o)


def _expand_kv(x: torch.Tensor, group: int) -> torch.Tensor:
    """[1, Hkv, L, D] -> [1, Hkv*group, L, D] (query head h uses KV head h // group)."""
    return x if group == 1 else x.repeat_interleave(group, dim=1)


def _sdpa_causal(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Plain causal attention of a whole-context chunk: [ql, H, D] x [ql, Hkv, D] -> [ql, H, D]."""
    g = q.shape[1] // k.shape[1]
    qi, ki, vi = q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None]
    o = F.scaled_dot_product_attention(qi, _expand_kv(ki, g), _expand_kv(vi, g), is_causal=True, scale=scale)
    return o[0].transpose(0, 1)


def _prefill_over_cache(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
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
