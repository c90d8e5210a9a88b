"""Custom ops: the CUDA kernels of csrc/ where they can run, the torch reference elsewhere.

Every function here has the semantics of :mod:`continuum.ops.reference` (vLLM argument
order). On CUDA tensors it calls ``torch.ops.continuum_C.*`` once :func:`load` has built the
extension; otherwise (CPU tensors, torch without CUDA, no compiler, a failed build, or
``CONTINUUM_DISABLE_CUDA_OPS=1``) it runs the reference, after logging the reason once.

Invariant: :func:`load` never raises; callers may call :func:`available` on the hot path
(a cached bool after the first call).
"""
from __future__ import annotations

import logging
import os

import torch

from continuum.ops import reference

logger = logging.getLogger(__name__)

_state: dict = {"tried": False, "ok": False, "reason": "not tried"}

# What the decode kernel is instantiated for (csrc/paged_attention.cu); anything else takes
# the reference path.
DECODE_HEAD_SIZES = (64, 128, 256)
DECODE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# The varlen kernel (csrc/paged_attention_varlen.cu): head size -> most query heads per KV head
# (its query rows per CTA, csrc/paged_attention_varlen.h); same dtypes as decode.
VARLEN_MAX_GROUP = {64: 64, 128: 64, 256: 32}


# csrc/paged_attention.h: tokens per split (kMaxPartition; the planner halves it down to
# kMinPartition only while the grid has fewer than 2 CTAs per SM).
DECODE_MAX_PARTITION = 512
DECODE_MIN_PARTITION = 128


def decode_workspace_floats(max_num_seqs: int, num_heads: int, num_kv_heads: int, head_size: int,
                            max_seq_len: int, num_sms: int) -> int:
    """fp32 floats of split-K scratch that cover every decode call with at most
    ``max_num_seqs`` sequences and ``max_seq_len`` tokens of context on a GPU with ``num_sms``
    SMs (0: no call splits). The kernel's partials are dense ``[B, H, splits, D + 2]``.

    Bound, from ``paged_decode_plan``: if the planner keeps 512-token partitions, splits <=
    ceil(max_seq_len / 512) for any batch; if it halved them, the grid before the last halving
    had < 2 * num_sms CTAs, so B * Hkv * head_chunks * splits < 4 * num_sms. The workspace is
    the larger of the two (tests/ops/test_decode_emulated.py checks it against the C++ plan)."""
    if max_seq_len <= DECODE_MIN_PARTITION:
        return 0
    group = num_heads // num_kv_heads
    group_pad = 1 if group <= 1 else 2 if group <= 2 else 4 if group <= 4 else 8
    chunks = -(-group // group_pad)
    full = max_num_seqs * -(-max_seq_len // DECODE_MAX_PARTITION)            # sequences x splits
    halved = -(-4 * num_sms // (num_kv_heads * chunks))
    return max(full, halved) * num_heads * (head_size + 2)


def _already_registered() -> bool:
    try:
        torch.ops.continuum_C.paged_attention_decode   # e.g. built at install time
        return True
    except (AttributeError, RuntimeError):
        return False


def load(verbose: bool = False) -> bool:
    """Build/load the extension once. True iff the CUDA ops are usable."""
    if _state["tried"]:
        return _state["ok"]
    _state["tried"] = True
    if os.environ.get("CONTINUUM_DISABLE_CUDA_OPS") == "1":
        _state["reason"] = "disabled by CONTINUUM_DISABLE_CUDA_OPS=1"
    elif not torch.cuda.is_available():
        _state["reason"] = "no CUDA device (torch.cuda.is_available() is False)"
    elif _already_registered():
        _state["ok"] = True
    else:
        try:
            from continuum.ops import build
            logger.info("continuum.ops: building/loading the CUDA kernels in %s (a first build takes "
                        "1-2 minutes)", build.cache_dir())
            build.build(verbose=verbose)
            _state["ok"] = _already_registered()
            if not _state["ok"]:
                _state["reason"] = "extension loaded but registered no ops"
        except Exception as e:  # noqa: BLE001 - any build failure means: use the reference
            _state["reason"] = f"build failed: {type(e).__name__}: {str(e)[-2000:]}"
    if not _state["ok"]:
        level = logging.INFO if "no CUDA device" in _state["reason"] else logging.WARNING
        logger.log(level, "continuum.ops: CUDA kernels unavailable (%s); using the torch reference "
                   "implementations", _state["reason"])
    return _state["ok"]


def available() -> bool:
    """True iff the CUDA kernels are built and loaded (triggers :func:`load` once)."""
    return load()


def unavailable_reason() -> str:
    load()
    return "" if _state["ok"] else _state["reason"]


def _use_cuda(t: torch.Tensor) -> bool:
    return t.is_cuda and load()


def reshape_and_cache(key: torch.Tensor, value: torch.Tensor, key_cache: torch.Tensor,
                      value_cache: torch.Tensor, slot_mapping: torch.Tensor) -> None:
    if _use_cuda(key_cache):
        if key.dtype != key_cache.dtype:
            key, value = key.to(key_cache.dtype), value.to(value_cache.dtype)
        if key.stride(-1) != 1 or key.stride(-2) != key.shape[-1]:
            key = key.contiguous()
        if value.stride(-1) != 1 or value.stride(-2) != value.shape[-1]:
            value = value.contiguous()
        torch.ops.continuum_C.reshape_and_cache(key, value, key_cache, value_cache, slot_mapping)
    else:
        reference.reshape_and_cache(key, value, key_cache, value_cache, slot_mapping)


def _aligned_rows(q: torch.Tensor) -> torch.Tensor:
    """q itself when its rows are 16-byte aligned with unit last stride (what the kernels load
    with 16-byte vectors), else a contiguous copy."""
    e = q.element_size()
    if q.stride(-1) != 1 or (q.stride(1) * e) % 16 or (q.stride(0) * e) % 16 or q.data_ptr() % 16:
        return q.contiguous()
    return q


def paged_attention_decode(out: torch.Tensor, q: torch.Tensor, k_cache: torch.Tensor,
                           v_cache: torch.Tensor, block_tables: torch.Tensor, seq_lens: torch.Tensor,
                           scale: float, max_seq_len: int, workspace: torch.Tensor | None = None) -> None:
    """out/q ``[B, H, D]``; ``max_seq_len >= max(seq_lens)`` sets the split count (a CUDA graph
    passes the longest context it will replay with). ``workspace``: fp32 scratch for the split
    partials, at least :func:`decode_workspace_floats` for this batch (None: allocated per call)."""
    if q.shape[-1] in DECODE_HEAD_SIZES and q.dtype in DECODE_DTYPES and _use_cuda(q):
        torch.ops.continuum_C.paged_attention_decode(out, _aligned_rows(q), k_cache, v_cache, block_tables,
                                                     seq_lens, float(scale), int(max_seq_len), workspace)
    else:
        reference.paged_attention_decode(out, q, k_cache, v_cache, block_tables, seq_lens, scale, max_seq_len)


def paged_attention_varlen(out: torch.Tensor, q: torch.Tensor, k_cache: torch.Tensor,
                           v_cache: torch.Tensor, block_tables: torch.Tensor, seq_lens: torch.Tensor,
                           query_start_loc: torch.Tensor, scale: float) -> None:
    """Every sequence of a step in one call: rows ``query_start_loc[i] .. [i+1]-1`` of out/q
    ``[T, H, D]`` are sequence i's new tokens, the last of its ``seq_lens[i]`` cached tokens
    (bottom-right causal; see :func:`continuum.ops.reference.paged_attention_varlen`). The
    CUDA kernel serves head sizes 64/128/256 with up to ``VARLEN_MAX_GROUP[d]`` query heads
    per KV head; other shapes, CPU tensors and a missing build run the reference."""
    d, g = q.shape[-1], q.shape[1] // k_cache.shape[2]
    if d in VARLEN_MAX_GROUP and g <= VARLEN_MAX_GROUP[d] and q.dtype in DECODE_DTYPES and _use_cuda(q):
        torch.ops.continuum_C.paged_attention_varlen(out, _aligned_rows(q), k_cache, v_cache, block_tables,
                                                     seq_lens, query_start_loc, float(scale))
    else:
        reference.paged_attention_varlen(out, q, k_cache, v_cache, block_tables, seq_lens, query_start_loc,
                                         scale)


def copy_blocks(key_caches: list[torch.Tensor], value_caches: list[torch.Tensor],
                block_mapping: torch.Tensor) -> None:
    """Block dst := block src for each (src, dst) row, in every layer's K and V cache (one
    launch on CUDA). A block must not be both a source and a destination in one call: the
    CUDA copies run concurrently, so such a chain would race (the reference reads first)."""
    if key_caches and _use_cuda(key_caches[0]):
        torch.ops.continuum_C.copy_blocks(list(key_caches), list(value_caches), block_mapping)
    else:
        reference.copy_blocks(key_caches, value_caches, block_mapping)


def swap_blocks(src: torch.Tensor, dst: torch.Tensor, block_mapping: torch.Tensor) -> None:
    """One tensor's blocks between GPU and pinned host (or GPU and GPU), merged into runs."""
    pinned_ok = (src.is_cuda or src.is_pinned()) and (dst.is_cuda or dst.is_pinned())
    if (src.is_cuda or dst.is_cuda) and pinned_ok and load():
        torch.ops.continuum_C.swap_blocks(src, dst, block_mapping)
    else:
        reference.swap_blocks(src, dst, block_mapping)


def swap_blocks_batched(srcs: list[torch.Tensor], dsts: list[torch.Tensor],
                        block_mapping: torch.Tensor) -> None:
    """Every layer's blocks in one kernel launch (host sides must be pinned)."""
    pinned_ok = all((t.is_cuda or t.is_pinned()) for t in list(srcs) + list(dsts))
    if srcs and (srcs[0].is_cuda or dsts[0].is_cuda) and pinned_ok and load():
        torch.ops.continuum_C.swap_blocks_batched(list(srcs), list(dsts), block_mapping)
    else:
        reference.swap_blocks_batched(srcs, dsts, block_mapping)
