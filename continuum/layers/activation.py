"""Gated activations on a merged gate/up projection."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from continuum.layers.cpu_kernels import use_fused


class SiluAndMul(nn.Module):
    """``silu(x[..., :d]) * x[..., d:]`` for x of last dim 2d (output of ``gate_up_proj``)."""

    def __init__(self):
        super().__init__()
        self.fused = None        # torch.ops.continuum_cpu_ops when a CPU backend binds the model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if use_fused(self.fused, x):
            return self.fused.silu_and_mul(x)
        gate, up = x.chunk(2, dim=-1)
        return F.silu(gate) * up
