"""Paged attention: the torch reference backend, the oracle every kernel is tested against.

KV cache layout per layer ("flash" layout): ``k_cache`` and ``v_cache`` each of shape
``[num_blocks, block_size, num_kv_heads, head_size]``. A token at slot ``s`` lives in block
``s // block_size`` at offset ``s % block_size``.

One step's batch is flattened: the new tokens of every scheduled sequence are concatenated
(``query_start_loc`` delimits them) and each sequence's context is the first ``seq_lens[i]``
tokens of its block table, the new tokens being the last ``query_lens[i]`` of them. The model
runner sets the metadata once per step with :func:`set_forward_context`; every
:class:`Attention` layer reads it (nano-vllm's context pattern), so model code stays free of
batching details.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# One definition of the cache write for every path (the CUDA kernel's fallback is this too).
from continuum.ops.reference import reshape_and_cache  # noqa: F401  (re-exported)


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

    @property
    def is_pure_decode(self) -> bool:
        return all(q == 1 for q in self.query_lens_list)


_CONTEXT: AttentionMetadata | None = None
# Decode backend: None = the torch reference below; else a callable with the signature of
# ``paged_attention_decode(q, k_cache, v_cache, block_tables, seq_lens, scale)``.
_DECODE_KERNEL = None


def set_decode_kernel(fn) -> None:
    """Install (or with None remove) a faster decode kernel; prefill stays on the reference."""
    global _DECODE_KERNEL
    _DECODE_KERNEL = fn


# Whole-layer backend (cache write + attention), e.g. attention_cuda.forward; None = below.
_FULL_BACKEND = None


def select_backend(device) -> str:
    """Pick the attention backend for ``device``; returns its name. ``CONTINUUM_ATTENTION_BACKEND``:
    ``auto`` (default: the CPU kernel on CPU, the torch reference elsewhere), ``torch`` (the
    reference everywhere; tests compare kernels against it), ``cuda`` (csrc/ kernels on GPU)."""
    import os
    global _FULL_BACKEND
    _FULL_BACKEND = None
    choice = os.environ.get("CONTINUUM_ATTENTION_BACKEND", "auto")
    forced_torch = choice == "torch"
    # The CUDA kernels compile in CI but have not yet been validated on a GPU (issue 6's device
    # check): until then they are opt-in with CONTINUUM_ATTENTION_BACKEND=cuda.
    if choice == "cuda" and torch.device(device).type == "cuda":
        from continuum.layers import attention_cuda
        if attention_cuda.enabled(torch.device(device)):
            set_decode_kernel(None)
            _FULL_BACKEND = attention_cuda.forward
            return "cuda"
    from continuum.layers import cpu_kernels
    if forced_torch or str(device) != "cpu":
        set_decode_kernel(None)
        cpu_kernels.enable_fused(False)
        return "torch"
    mod = cpu_kernels.load()
    cpu_kernels.enable_fused(mod is not None)
    set_decode_kernel(mod.paged_attention_decode if mod is not None else None)
    return "cpu-kernel" if mod is not None else "torch"


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

    Without a forward context (plain full-sequence forward, e.g. a unit test) it runs causal
    SDPA over the given tokens with no cache.
    """

    def __init__(self, num_heads: int, num_kv_heads: int, head_size: int, scale: float):
        super().__init__()
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_size = head_size
        self.scale = scale
        self.k_cache: torch.Tensor | None = None
        self.v_cache: torch.Tensor | None = None

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q: [T, num_heads*head_size], k/v: [T, num_kv_heads*head_size] -> [T, num_heads*head_size]."""
        T = q.shape[0]
        q = q.view(T, self.num_heads, self.head_size)
        k = k.view(T, self.num_kv_heads, self.head_size)
        v = v.view(T, self.num_kv_heads, self.head_size)
        meta = get_forward_context()
        if meta is None or self.k_cache is None:
            g = self.num_heads // self.num_kv_heads
            o = F.scaled_dot_product_attention(
                q.transpose(0, 1)[None], k.transpose(0, 1).repeat_interleave(g, 0)[None],
                v.transpose(0, 1).repeat_interleave(g, 0)[None], is_causal=True, scale=self.scale)
            return o[0].transpose(0, 1).reshape(T, -1)
        if _FULL_BACKEND is not None:
            return _FULL_BACKEND(q, k, v, self.k_cache, self.v_cache, meta, self.scale).reshape(T, -1)
        reshape_and_cache(k, v, self.k_cache, self.v_cache, meta.slot_mapping)
        if _DECODE_KERNEL is not None and meta.is_pure_decode:
            o = _DECODE_KERNEL(q, self.k_cache, self.v_cache, meta.block_tables, meta.seq_lens, self.scale)
        else:
            o = paged_attention_ref(q, self.k_cache, self.v_cache, meta, self.scale, k, v)
        return o.reshape(T, -1)
