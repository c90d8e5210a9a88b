"""Rotary position embeddings (RoPE), HF/NeoX "rotate half" layout.

The cos/sin table is computed once at construction for every position below
``max_position`` and indexed by the ``positions`` tensor at run time, so a forward pass does
no per-token Python work and no trigonometry. Supported frequency schemes: ``default``,
``linear`` and ``llama3`` (Llama 3.1's smoothed long-context scaling), plus explicit
per-frequency divisors (what llama.cpp stores as the ``rope_freqs`` tensor of Llama 3.1 GGUFs).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from continuum.errors import UnsupportedArchitectureError
from continuum.layers.cpu_kernels import use_fused

SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")


def rope_type_of(rope_scaling: dict | None) -> str:
    """The scheme named by a HF ``rope_scaling``/``rope_parameters`` dict (None -> default)."""
    if not rope_scaling:
        return "default"
    return rope_scaling.get("rope_type") or rope_scaling.get("type") or "default"


def compute_inv_freq(head_size: int, base: float, rope_scaling: dict | None = None) -> torch.Tensor:
    """Inverse frequencies [head_size // 2], float32, bit-identical to transformers' formulas."""
    # Same expression as transformers (int64 arange cast to float) so fp32 results match exactly.
    exponent = torch.arange(0, head_size, 2, dtype=torch.int64, device="cpu").float() / head_size
    inv_freq = 1.0 / (base ** exponent)
    rope_type = rope_type_of(rope_scaling)
    if rope_type == "default":
        return inv_freq
    if rope_type == "linear":
        return inv_freq / float(rope_scaling["factor"])
    if rope_type == "llama3":
        return _llama3_inv_freq(inv_freq, rope_scaling)
    raise UnsupportedArchitectureError(
        f"rope type {rope_type!r} is not supported (supported: {', '.join(SUPPORTED_ROPE_TYPES)})")


def _llama3_inv_freq(inv_freq: torch.Tensor, p: dict) -> torch.Tensor:
    """Llama 3.1: keep high frequencies, divide low ones by ``factor``, blend in between."""
    factor = float(p["factor"])
    low_ff = float(p.get("low_freq_factor", 1.0))
    high_ff = float(p.get("high_freq_factor", 4.0))
    old_len = float(p["original_max_position_embeddings"])
    low_wavelen = old_len / low_ff
    high_wavelen = old_len / high_ff
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low_ff) / (high_ff - low_ff)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
    return torch.where(is_medium, smoothed, scaled)


class RotaryEmbedding(nn.Module):
    """Applies RoPE to flattened q/k. Invariant: ``positions < max_position``.

    ``cos_sin_cache`` is a non-persistent buffer ``[max_position, head_size]`` holding
    ``cos`` in the first half of the last dim and ``sin`` in the second; it follows the module
    across ``.to(device/dtype)`` (transformers also casts cos/sin to the activation dtype).
    """

    def __init__(self, head_size: int, max_position: int, base: float,
                 rope_scaling: dict | None = None):
        super().__init__()
        self.head_size = head_size
        self.max_position = max_position
        self.base = base
        self.rope_scaling = rope_scaling
        self.fused = None        # torch.ops.continuum_cpu_ops when a CPU backend binds the model
        inv_freq = compute_inv_freq(head_size, base, rope_scaling)
        self.register_buffer("cos_sin_cache", self._build_cache(inv_freq), persistent=False)

    def _build_cache(self, inv_freq: torch.Tensor) -> torch.Tensor:
        # Built on the CPU in fp32 explicitly, whatever default device/dtype context is active.
        pos = torch.arange(self.max_position, dtype=torch.float32, device="cpu")
        freqs = pos[:, None] * inv_freq[None, :].float()
        return torch.cat([freqs.cos(), freqs.sin()], dim=-1)

    def set_freq_factors(self, freq_factors: torch.Tensor) -> None:
        """Divide every inverse frequency by ``freq_factors[i]`` and rebuild the table.

        This is how llama.cpp encodes Llama 3.1's scaling (tensor ``rope_freqs.weight``);
        apply it on top of a ``default`` rope, never on top of ``llama3`` (double scaling).
        """
        base_inv = compute_inv_freq(self.head_size, self.base, None)
        inv = base_inv / freq_factors.detach().to("cpu", torch.float32).reshape(-1)
        cache = self._build_cache(inv)
        self.cos_sin_cache = cache.to(self.cos_sin_cache.device, self.cos_sin_cache.dtype)

    def get_cos_sin(self, positions: torch.Tensor) -> torch.Tensor:
        """Each token's ``[cos | sin]`` row, [T, head_size]: looked up once per step, shared by
        every layer's :meth:`rotate`."""
        return self.cos_sin_cache.index_select(0, positions)

    def rotate(self, x: torch.Tensor, cs: torch.Tensor) -> torch.Tensor:
        """Rotate x [T, n*head_size] (any head count) -> a new contiguous tensor, same shape."""
        T = x.shape[0]
        if use_fused(self.fused, x):
            return self.fused.rotary(x, cs, self.head_size)
        cos, sin = cs[:, None, :].chunk(2, dim=-1)
        x = x.view(T, -1, self.head_size)
        x1, x2 = x.chunk(2, dim=-1)
        # Same arithmetic as HF's ``x*cos + rotate_half(x)*sin`` (negation is exact in IEEE).
        out = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
        return out.view(T, -1)

    def forward(self, positions: torch.Tensor, q: torch.Tensor,
                k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """positions [T]; q [T, nh*hd]; k [T, nkv*hd] -> rotated (q, k) with the same shapes."""
        cs = self.get_cos_sin(positions)
        return self.rotate(q, cs), self.rotate(k, cs)
