"""Gated activations on a merged gate/up projection."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from continuum.layers.cpu_kernels import fused_ops


class SiluAndMul(nn.Module):
    """``silu(x[..., :d]) * x[..., d:]`` for x of last dim 2d (output of ``gate_up_proj``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fused = fused_ops(x)
        if fused is not None and x.dim() == 2:
            return fused.silu_and_mul(x)
        gate, up = x.chunk(2, dim=-1)
        return F.silu(gate) * up
