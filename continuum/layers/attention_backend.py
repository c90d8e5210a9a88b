"""Attention backends: one object per engine that every attention layer of its model calls.

An engine's :class:`~continuum.engine.model_runner.ModelRunner` creates its backend
(:func:`select_backend`), binds it to the model's :class:`~continuum.layers.attention.Attention`
layers (``bind``) and, once per step, hands it the step's metadata (``step(meta)``, i.e.
``plan(meta)`` ... ``finish()``). ``plan`` does the per-step work every layer shares (the CPU
kernel's work partition) so layers only run the kernel. The backend owns its state (current
metadata, plan, scratch), so two engines in one process, each with its own backend, never see
each other's steps: nothing here is a module global.

Invariants: a backend's ``meta`` is set only between ``plan`` and ``finish`` of one step and is
what its layers attend with; layers of one model share one backend; ``forward`` gets q
``[T, H, D]`` and the step's new k/v ``[T, Hkv, D]``, writes k/v into the layer's cache at
``meta.slot_mapping``, and returns ``[T, H, D]``.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch

from continuum.layers.activation import SiluAndMul
from continuum.layers.attention import (Attention, AttentionMetadata, attention_layers, paged_attention_ref,
                                        reshape_and_cache)
from continuum.layers.layernorm import RMSNorm
from continuum.layers.rotary import RotaryEmbedding

# Layers with a fused CPU kernel (csrc/cpu/fused_ops_cpu.cpp); a backend sets their ``fused``.
_FUSABLE = (RMSNorm, SiluAndMul, RotaryEmbedding)


class AttentionBackend:
    """Base: the torch reference (``paged_attention_ref``), the oracle the others are tested
    against. Subclasses override ``_plan`` and ``forward``."""

    name = "torch"

    def __init__(self) -> None:
        self.meta: AttentionMetadata | None = None
        self.layers: list[Attention] = []

    fused = None          # the fused elementwise ops this backend gives its model's layers

    def bind(self, model: torch.nn.Module) -> None:
        """Route every Attention layer of ``model`` through this backend, and its RMSNorm,
        SiLU-and-mul and rotary layers through ``fused`` (None: the torch composition)."""
        self.layers = [m for m in model.modules() if isinstance(m, Attention)]
        for layer in self.layers:
            layer.backend = self
        for m in model.modules():
            if isinstance(m, _FUSABLE):
                m.fused = self.fused

    def reserve(self, model: torch.nn.Module, max_num_seqs: int, max_model_len: int) -> None:
        """Allocate the scratch the backend's kernels need for any step of up to
        ``max_num_seqs`` sequences and ``max_model_len`` tokens of context. The engine calls it
        before it sizes the KV cache from the free memory, so the scratch is counted as used
        and nothing is allocated later (inside a CUDA-graph capture, or after the KV cache
        took the rest). Default: nothing to reserve."""

    def plan(self, meta: AttentionMetadata) -> None:
        """Start a step: every layer attends with ``meta`` until ``finish``."""
        self.meta = meta
        self._plan(meta)

    def finish(self) -> None:
        self.meta = None

    @contextlib.contextmanager
    def step(self, meta: AttentionMetadata) -> Iterator[None]:
        self.plan(meta)
        try:
            yield
        finally:
            self.finish()

    def _plan(self, meta: AttentionMetadata) -> None:
        pass

    def forward(self, layer: Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                meta: AttentionMetadata) -> torch.Tensor:
        reshape_and_cache(k, v, layer.k_cache, layer.v_cache, meta.slot_mapping)
        return paged_attention_ref(q, layer.k_cache, layer.v_cache, meta, layer.scale, k, v)


class CpuKernelBackend(AttentionBackend):
    """The C++ kernels of csrc/cpu: ``paged_attention_decode`` for pure-decode steps,
    ``paged_attention_varlen`` for every other step (prefill chunks, mixed batches), one call
    per layer. ``plan`` computes the varlen work partition once per step for each (kv heads,
    group) shape the model has; the per-thread scratch is allocated once, at ``bind``."""

    name = "cpu-kernel"
    MAX_Q_TILE = 0       # queries per work item at most; 0: the kernel's default (~384 rows)

    def __init__(self, module) -> None:
        super().__init__()
        self.mod = module
        # Registered by the same built module (csrc/cpu/fused_ops_cpu.cpp) as ``module``'s kernels.
        self.fused = torch.ops.continuum_cpu_ops
        self.num_threads = torch.get_num_threads()
        self.workspace: torch.Tensor | None = None
        self._work: dict[tuple[int, int], torch.Tensor] = {}
        self.num_varlen_steps = 0     # steps planned for the varlen kernel (not pure decode)

    def bind(self, model: torch.nn.Module) -> None:
        super().bind(model)
        need = max((self.mod.varlen_workspace_floats(self.MAX_Q_TILE, l.num_heads // l.num_kv_heads,
                                                     l.head_size) for l in self.layers), default=0)
        self.workspace = torch.empty(self.num_threads, need) if need else None

    def _plan(self, meta: AttentionMetadata) -> None:
        self._work = {}
        if meta.is_pure_decode:
            return
        self.num_varlen_steps += 1
        for hkv, g in {(l.num_kv_heads, l.num_heads // l.num_kv_heads) for l in self.layers}:
            self._work[(hkv, g)] = self.mod.varlen_plan(meta.seq_lens, meta.query_start_loc, hkv, g,
                                                        self.num_threads, self.MAX_Q_TILE)

    def finish(self) -> None:
        super().finish()
        self._work = {}

    def forward(self, layer, q, k, v, meta):
        if k.dtype == layer.k_cache.dtype:
            self.fused.reshape_and_cache(k, v, layer.k_cache, layer.v_cache, meta.slot_mapping)
        else:
            reshape_and_cache(k, v, layer.k_cache, layer.v_cache, meta.slot_mapping)
        if meta.is_pure_decode:
            return self.mod.paged_attention_decode(q, layer.k_cache, layer.v_cache, meta.block_tables,
                                                   meta.seq_lens, layer.scale)
        # Planned once per step when the step went through plan(); else (a layer called with a
        # global forward context) the kernel plans for itself.
        work = self._work.get((layer.num_kv_heads, layer.num_heads // layer.num_kv_heads))
        return self.mod.paged_attention_varlen(q, layer.k_cache, layer.v_cache, meta.block_tables,
                                               meta.seq_lens, meta.query_start_loc, layer.scale,
                                               work, self.workspace)


class CudaBackend(AttentionBackend):
    """csrc/ CUDA kernels: KV write, decode (pure-decode steps) and varlen paged attention
    (every other step, one launch per layer): continuum.layers.attention_cuda. Owns the decode
    kernel's split-K workspace (``reserve``), shared by every layer of its model (layers run
    one after another on one stream)."""

    name = "cuda"

    def __init__(self) -> None:
        super().__init__()
        self.workspace: torch.Tensor | None = None

    def reserve(self, model, max_num_seqs, max_model_len):
        from continuum import ops

        layers = attention_layers(model)
        if not layers:
            return
        device = next(model.parameters()).device
        sms = torch.cuda.get_device_properties(device).multi_processor_count
        need = max(ops.decode_workspace_floats(max_num_seqs, a.num_heads, a.num_kv_heads, a.head_size,
                                               max_model_len, sms) for a in layers)
        self.workspace = torch.empty(need, dtype=torch.float32, device=device) if need else None

    def forward(self, layer, q, k, v, meta):
        from continuum.layers import attention_cuda
        return attention_cuda.forward(q, k, v, layer.k_cache, layer.v_cache, meta, layer.scale, self.workspace)


def select_backend(device, choice: str | None = None) -> AttentionBackend:
    """A new backend for ``device``. ``choice`` (default: ``CONTINUUM_ATTENTION_BACKEND``):
    ``auto`` (default: the CPU kernel on CPU, the torch reference elsewhere), ``torch`` (the
    reference everywhere; tests compare kernels against it), ``cuda`` (csrc/ kernels on GPU).
    A kernel that is unavailable (no compiler, no GPU build) falls back to the reference."""
    choice = choice or os.environ.get("CONTINUUM_ATTENTION_BACKEND", "auto")
    if choice not in ("auto", "torch", "cuda"):
        raise ValueError(f"unknown attention backend {choice!r}: auto, torch or cuda")
    device = torch.device(device)
    # The CUDA kernels compile in CI but have not yet been validated on a GPU (issue 6's device
    # check): until then they are opt-in with CONTINUUM_ATTENTION_BACKEND=cuda.
    if choice == "cuda" and device.type == "cuda":
        from continuum.layers import attention_cuda
        if attention_cuda.enabled(device):
            return CudaBackend()
    if choice == "torch" or device.type != "cpu":
        return AttentionBackend()
    from continuum.layers import cpu_kernels
    mod = cpu_kernels.load()
    return CpuKernelBackend(mod) if mod is not None else AttentionBackend()
