"""CUDA attention backend: the csrc kernels for the KV write, decode and every other step.

Same contract as the torch reference in :mod:`continuum.layers.attention` (``forward`` here ==
``reshape_and_cache`` + ``paged_attention_ref`` there), so the reference stays the oracle:

- every token's K/V is written at ``slot_mapping`` first (``< 0`` skips it);
- a pure-decode step runs the paged decode kernel (split-K over long contexts; CUDA graphs
  capture it);
- any other step (prefill chunks over cached prefixes, whole prompts, and the decodes mixed
  with them) runs ONE varlen paged-attention launch for all its sequences, reading K/V in
  place from the paged cache (no gather, no repeat per GQA group, no dense mask; docs/kernels.md
  §2). Its one-token rows stay in that launch rather than going to the decode kernel: no
  host-side row lists, index_select or index_copy, and the step's prefill CTAs keep the GPU busy
  while a long decode row (which gets no split-K there) runs.

On CPU tensors, or without the built extension, the same code runs with the torch reference
ops (continuum.ops falls back), which is how the CPU tests exercise this module.
Graph capture: neither path synchronises with the host (``seq_lens_list`` is host data, and
the varlen grid is sized from tensor shapes), so :mod:`continuum.engine.cuda_graph` can capture
decode steps.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from continuum import ops

if TYPE_CHECKING:
    from continuum.layers.attention import AttentionMetadata


def enabled(device: torch.device) -> bool:
    """True where this backend should replace the reference: a CUDA device with built kernels."""
    return device.type == "cuda" and ops.available()


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
    else:
        ops.paged_attention_varlen(out, q, k_cache, v_cache, meta.block_tables, meta.seq_lens,
                                   meta.query_start_loc, scale)
    return out
