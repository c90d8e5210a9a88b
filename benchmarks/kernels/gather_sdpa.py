"""The CUDA backend's former mixed-step path, kept as a baseline the varlen kernel is timed
against (bench_prefill.py, bench_varlen.py): per sequence of more than one new token, SDPA on
the new K/V when the chunk is its whole context, else a gather of its K/V out of the paged
cache, ``repeat_interleave`` per GQA group and SDPA with a bottom-right causal mask (the
engine still does this for chunks of ``attention_cuda.LONG_CHUNK`` tokens or more); one-token
rows in one decode launch."""
from __future__ import annotations

import torch

from continuum import ops
from continuum.layers.attention_cuda import prefill_over_cache, sdpa_causal


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
