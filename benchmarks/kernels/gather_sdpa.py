"""The CUDA backend's former prefill path, kept as the baseline the varlen kernel is timed
against (bench_prefill.py, bench_varlen.py): per sequence, SDPA on the new K/V when the chunk
is its whole context, else a gather of its K/V out of the paged cache, ``repeat_interleave``
per GQA group and SDPA with a bottom-right causal mask; one-token rows in one decode launch.
Not used by the engine."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from continuum import ops


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
    o = F.scaled_dot_product_attention(q.transpose(0, 1)[None], ki, vi,
                                       attn_mask=causal_lower_right(ql, sl), scale=scale)
    return o[0].transpose(0, 1)


def attention(q: torch.Tensor, k_new: torch.Tensor, v_new: torch.Tensor, k_cache: torch.Tensor,
              v_cache: torch.Tensor, block_tables: torch.Tensor, seq_lens: torch.Tensor,
              query_lens: list[int], seq_lens_list: list[int], scale: float) -> torch.Tensor:
    """The old mixed-step attention (K/V already cached): out ``[T, H, D]``."""
    out = torch.empty_like(q)
    starts = [0]
    for ql in query_lens:
        starts.append(starts[-1] + ql)
    single = [i for i, ql in enumerate(query_lens) if ql == 1]
    if single:
        dev = q.device
        tok = torch.tensor([starts[i] for i in single], device=dev)
        seq = torch.tensor(single, device=dev)
        o = torch.empty((len(single),) + tuple(q.shape[1:]), dtype=q.dtype, device=dev)
        ops.paged_attention_decode(o, q.index_select(0, tok), k_cache, v_cache, block_tables.index_select(0, seq),
                                   seq_lens.index_select(0, seq), scale, max(seq_lens_list[i] for i in single))
        out.index_copy_(0, tok, o)
    for i, (ql, sl) in enumerate(zip(query_lens, seq_lens_list)):
        if ql <= 1:
            continue
        s, e = starts[i], starts[i] + ql
        if ql == sl:
            out[s:e] = sdpa_causal(q[s:e], k_new[s:e], v_new[s:e], scale)
        else:
            out[s:e] = prefill_over_cache(q[s:e], k_cache, v_cache, block_tables[i], sl, scale)
    return out
