"""Torch implementations of every custom op in ``continuum_C``, same signatures and semantics.

They serve as the fallback where the CUDA extension is absent (CPU, no nvcc, failed build) and
as a second oracle in tests. Written for clarity, not speed: per-sequence loops, fp32 math.
"""
from __future__ import annotations

import torch


def reshape_and_cache(key: torch.Tensor, value: torch.Tensor, key_cache: torch.Tensor,
                      value_cache: torch.Tensor, slot_mapping: torch.Tensor) -> None:
    """Write key/value ``[T, Hkv, D]`` at row ``slot_mapping[t]`` of the caches (``< 0``: skip)."""
    nkv, hd = key_cache.shape[-2:]
    valid = slot_mapping >= 0
    if not bool(valid.all()):
        key, value, slot_mapping = key[valid], value[valid], slot_mapping[valid]
    key_cache.view(-1, nkv, hd).index_copy_(0, slot_mapping, key.to(key_cache.dtype))
    value_cache.view(-1, nkv, hd).index_copy_(0, slot_mapping, value.to(value_cache.dtype))


def paged_attention_decode(out: torch.Tensor, q: torch.Tensor, k_cache: torch.Tensor,
                           v_cache: torch.Tensor, block_tables: torch.Tensor, seq_lens: torch.Tensor,
                           scale: float, max_seq_len: int) -> None:
    """``out[b] = softmax(q[b] K_b^T * scale) V_b`` over the first ``seq_lens[b]`` cached tokens
    (fp32 math); q/out ``[B, H, D]``; a sequence of length 0 gets zeros. ``max_seq_len`` is
    only a planning hint for the kernel and is ignored here."""
    del max_seq_len
    bs, hkv = k_cache.shape[1], k_cache.shape[2]
    g = q.shape[1] // hkv
    for b, L in enumerate(seq_lens.tolist()):
        if L <= 0:
            out[b].zero_()
            continue
        nb = (L + bs - 1) // bs
        blocks = block_tables[b, :nb]
        k = k_cache[blocks].flatten(0, 1)[:L].float().repeat_interleave(g, 1)    # [L, H, D]
        v = v_cache[blocks].flatten(0, 1)[:L].float().repeat_interleave(g, 1)
        s = torch.einsum("hd,lhd->hl", q[b].float(), k) * scale
        out[b] = torch.einsum("hl,lhd->hd", torch.softmax(s, -1), v).to(out.dtype)


def paged_attention_varlen(out: torch.Tensor, q: torch.Tensor, k_cache: torch.Tensor,
                           v_cache: torch.Tensor, block_tables: torch.Tensor, seq_lens: torch.Tensor,
                           query_start_loc: torch.Tensor, scale: float) -> None:
    """Every sequence of a step at once: rows ``qsl[i] .. qsl[i+1]-1`` of q/out ``[T, H, D]`` are
    sequence i's ``ql = qsl[i+1] - qsl[i]`` new tokens over a context of ``seq_lens[i]`` cached
    tokens (the new ones last); query row r sits at position ``seq_lens[i] - ql + r`` and sees
    keys ``0..`` that position (bottom-right causal). fp32 math; items with ``ql == 0`` write
    nothing. Raises ValueError when a query is longer than its context."""
    bs, hkv = k_cache.shape[1], k_cache.shape[2]
    g = q.shape[1] // hkv
    qsl = query_start_loc.tolist()
    for i, sl in enumerate(seq_lens.tolist()):
        s0, ql = qsl[i], qsl[i + 1] - qsl[i]
        if ql == 0:
            continue
        if ql > sl:
            raise ValueError(f"paged_attention_varlen: sequence {i} has {ql} queries over a context of {sl}")
        nb = (sl + bs - 1) // bs
        blocks = block_tables[i, :nb]
        k = k_cache[blocks].flatten(0, 1)[:sl].float().repeat_interleave(g, 1)    # [sl, H, D]
        v = v_cache[blocks].flatten(0, 1)[:sl].float().repeat_interleave(g, 1)
        s = torch.einsum("qhd,lhd->hql", q[s0:s0 + ql].float(), k) * scale
        qpos = torch.arange(sl - ql, sl, device=q.device)[:, None]
        s = s.masked_fill(torch.arange(sl, device=q.device)[None, :] > qpos, float("-inf"))
        out[s0:s0 + ql] = torch.einsum("hql,lhd->qhd", torch.softmax(s, -1), v).to(out.dtype)


def copy_blocks(key_caches: list[torch.Tensor], value_caches: list[torch.Tensor],
                block_mapping: torch.Tensor) -> None:
    """For each (src, dst) row of ``block_mapping``: block dst := block src, in every cache.
    Sources are read before any destination is written (as if all copies ran at once)."""
    if block_mapping.numel() == 0:
        return
    m = block_mapping.to(key_caches[0].device, torch.long)
    for cache in list(key_caches) + list(value_caches):
        cache.index_copy_(0, m[:, 1], cache.index_select(0, m[:, 0]))


def swap_blocks(src: torch.Tensor, dst: torch.Tensor, block_mapping: torch.Tensor) -> None:
    """Block ``dst[j] := src[i]`` for each (i, j) row; src and dst may be on different devices."""
    if block_mapping.numel() == 0:
        return
    m = block_mapping.to("cpu", torch.long)
    blocks = src.index_select(0, m[:, 0].to(src.device)).to(dst.device)
    dst.index_copy_(0, m[:, 1].to(dst.device), blocks)


def swap_blocks_batched(srcs: list[torch.Tensor], dsts: list[torch.Tensor],
                        block_mapping: torch.Tensor) -> None:
    """:func:`swap_blocks` for every (src, dst) pair of tensors with one shared mapping."""
    for s, d in zip(srcs, dsts, strict=True):
        swap_blocks(s, d, block_mapping)
