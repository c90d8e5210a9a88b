"""Paged attention: the torch reference backend, the oracle every kernel is tested against.

KV cache layout per layer ("flash" layout): ``k_cache`` and ``v_cache`` each of shape
``[num_blocks, block_size, num_kv_heads, head_size]``. A token at slot ``s`` lives in block
``s // block_size`` at offset ``s % block_size``.

One step's batch is flattened: the new tokens of every scheduled sequence are concatenated
(``query_start_loc`` delimits them) and each sequence's context is the first ``seq_lens[i]``
tokens of its block table, the new tokens being the last ``query_lens[i]`` of them. An engine's
model runner binds an :class:`~continuum.layers.attention_backend.AttentionBackend` to every
:class:`Attention` layer and hands it the metadata once per step (``backend.step(meta)``), so
model code stays free of batching details. A model run without an engine (tests, tools) can
instead set the metadata with :func:`set_forward_context`; its layers then run their bound
backend, or the reference when none is bound. A backend's step takes precedence.
"""
from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

# One definition of the cache write for every path (the CUDA kernel's fallback is this too).
from continuum.ops.reference import reshape_and_cache  # noqa: F401  (re-exported)

if TYPE_CHECKING:
    from continuum.layers.attention_backend import AttentionBackend


@dataclass
class AttentionMetadata:
    """Batch layout of one forward pass. Tensors live on the model's device.

    Invariants: ``query_start_loc[-1] == num_tokens``; ``len(seq_lens) == num_seqs``;
    ``query_lens[i] <= seq_lens[i]``; block_tables rows cover ``ceil(seq_lens[i]/block_size)``
    blocks (padding entries are never read). ``slot_mapping[t] < 0`` skips the cache write of
    token t (used for padding).
    """

    slot_mapping: torch.Tensor            # [num_tokens] int64
    block_tables: torch.Tensor            # [num_seqs, max_blocks] int64
    seq_lens: torch.Tensor                # [num_seqs] int64, context incl. new tokens
    query_start_loc: torch.Tensor         # [num_seqs + 1] int64
    seq_lens_list: list[int]              # host copies: the reference path loops on these
    query_lens_list: list[int]
    block_size: int

    @property
    def num_seqs(self) -> int:
        return len(self.seq_lens_list)

    @functools.cached_property
    def is_pure_decode(self) -> bool:
        # Cached: every layer asks (the lists are not changed after construction).
        return all(q == 1 for q in self.query_lens_list)


# Metadata for layers that no backend is bound to (a model run without an engine: tests,
# tools). An engine never sets it: its backend holds the step's metadata (attention_backend.py).
_CONTEXT: AttentionMetadata | None = None


@contextlib.contextmanager
def set_forward_context(meta: AttentionMetadata | None):
    global _CONTEXT
    prev, _CONTEXT = _CONTEXT, meta
    try:
        yield
    finally:
        _CONTEXT = prev


def get_forward_context() -> AttentionMetadata | None:
    return _CONTEXT


def current_metadata(layer: "Attention") -> AttentionMetadata | None:
    """The metadata ``layer`` attends with now: its backend's step, else the global context."""
    backend = layer.backend
    if backend is not None and backend.meta is not None:
        return backend.meta
    return _CONTEXT


def _gather(cache: torch.Tensor, block_table: torch.Tensor, n: int) -> torch.Tensor:
    """The first n tokens of a block table: [n, num_kv_heads, head_size]."""
    bs = cache.shape[1]
    nblocks = (n + bs - 1) // bs
    return cache[block_table[:nblocks]].flatten(0, 1)[:n]


def paged_attention_ref(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                        meta: AttentionMetadata, scale: float, k_new: torch.Tensor | None = None,
                        v_new: torch.Tensor | None = None) -> torch.Tensor:
    """Causal attention of the new tokens over their sequences' cached context.

    q: [num_tokens, num_heads, head_size] -> [num_tokens, num_heads, head_size].
    Assumes the new tokens' K/V are already in the cache (reshape_and_cache ran first).
    ``k_new``/``v_new`` (the new tokens' K/V, [num_tokens, num_kv_heads, head_size]) let a
    sequence with no cached prefix skip the gather.
    """
    num_heads = q.shape[1]
    num_kv_heads = k_cache.shape[2]
    gqa = num_heads // num_kv_heads
    out = torch.empty_like(q)
    if meta.is_pure_decode:
        return _decode_batched(q, k_cache, v_cache, meta, scale, gqa)
    start = 0
    for i, (ql, sl) in enumerate(zip(meta.query_lens_list, meta.seq_lens_list)):
        if ql == sl and k_new is not None:
            k, v = k_new[start:start + ql], v_new[start:start + ql]
        else:
            k = _gather(k_cache, meta.block_tables[i], sl).to(q.dtype)
            v = _gather(v_cache, meta.block_tables[i], sl).to(q.dtype)
        # 4-D inputs: 3-D ones miss the fused CPU flash kernel (about 3x slower).
        qi = q[start:start + ql].transpose(0, 1)[None]                 # [1, H, ql, D]
        ki = k.transpose(0, 1).repeat_interleave(gqa, 0)[None]         # [1, H, sl, D]
        vi = v.transpose(0, 1).repeat_interleave(gqa, 0)[None]
        if ql == sl:
            o = F.scaled_dot_product_attention(qi, ki, vi, is_causal=True, scale=scale)
        else:
            # Query j sits at absolute position sl - ql + j and sees keys 0..that position.
            qpos = torch.arange(sl - ql, sl, device=q.device)[:, None]
            mask = torch.arange(sl, device=q.device)[None, :] <= qpos
            o = F.scaled_dot_product_attention(qi, ki, vi, attn_mask=mask, scale=scale)
        out[start:start + ql] = o[0].transpose(0, 1)
        start += ql
    return out


def _decode_batched(q, k_cache, v_cache, meta, scale, gqa):
    """All sequences decode one token: one padded gather and one batched matmul."""
    bs = meta.block_size
    max_len = max(meta.seq_lens_list)
    nblocks = (max_len + bs - 1) // bs
    tables = meta.block_tables[:, :nblocks]
    B = q.shape[0]
    k = k_cache[tables].flatten(1, 2)[:, :max_len].to(q.dtype)          # [B, L, Hkv, D]
    v = v_cache[tables].flatten(1, 2)[:, :max_len].to(q.dtype)
    Hkv, D = k.shape[2], k.shape[3]
    qg = q.view(B, Hkv, gqa, D)                                         # [B, Hkv, g, D]
    scores = torch.einsum("bhgd,blhd->bhgl", qg, k) * scale
    valid = torch.arange(max_len, device=q.device)[None, :] < meta.seq_lens[:, None]
    scores = scores.masked_fill(~valid[:, None, None, :], float("-inf"))
    probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
    out = torch.einsum("bhgl,blhd->bhgd", probs, v)
    return out.reshape(B, Hkv * gqa, D)


class Attention(nn.Module):
    """Paged attention layer. The cache engine binds ``k_cache``/``v_cache`` after allocation.

    The model runner binds ``backend`` (an AttentionBackend), which holds each step's
    metadata and runs the kernels. Without metadata (plain full-sequence forward, e.g. a unit
    test) it runs causal SDPA over the given tokens with no cache.
    """

    def __init__(self, num_heads: int, num_kv_heads: int, head_size: int, scale: float):
        super().__init__()
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_size = head_size
        self.scale = scale
        self.k_cache: torch.Tensor | None = None
        self.v_cache: torch.Tensor | None = None
        self.backend: "AttentionBackend | None" = None

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q: [T, num_heads*head_size], k/v: [T, num_kv_heads*head_size] -> [T, num_heads*head_size]."""
        T = q.shape[0]
        q = q.view(T, self.num_heads, self.head_size)
        k = k.view(T, self.num_kv_heads, self.head_size)
        v = v.view(T, self.num_kv_heads, self.head_size)
        meta = current_metadata(self)
        if meta is None or self.k_cache is None:
            g = self.num_heads // self.num_kv_heads
            o = F.scaled_dot_product_attention(
                q.transpose(0, 1)[None], k.transpose(0, 1).repeat_interleave(g, 0)[None],
                v.transpose(0, 1).repeat_interleave(g, 0)[None], is_causal=True, scale=self.scale)
            return o[0].transpose(0, 1).reshape(T, -1)
        if self.backend is not None:
            return self.backend.forward(self, q, k, v, meta).reshape(T, -1)
        reshape_and_cache(k, v, self.k_cache, self.v_cache, meta.slot_mapping)
        return paged_attention_ref(q, self.k_cache, self.v_cache, meta, self.scale, k, v).reshape(T, -1)


def attention_layers(model: nn.Module) -> list[Attention]:
    """Every paged ``Attention`` module of ``model``, in module order."""
    return [m for m in model.modules() if isinstance(m, Attention)]
