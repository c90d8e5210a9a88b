"""RMSNorm with an optional fused residual add (vLLM's calling convention)."""
from __future__ import annotations

import torch
from torch import nn

from continuum.layers.cpu_kernels import use_fused


class RMSNorm(nn.Module):
    """``weight * x / sqrt(mean(x^2) + eps)`` over the last dim.

    The statistic is computed in float32 and the normalised value cast back to the input
    dtype *before* the weight multiply, exactly as transformers' Llama/Qwen RMSNorm does, so
    bf16 results match HF bit for bit in the common cases.
    """

    def __init__(self, hidden_size: int, eps: float = 1e-6, dtype: torch.dtype | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size, dtype=dtype))
        self.eps = eps
        self.fused = None        # torch.ops.continuum_cpu_ops when a CPU backend binds the model

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(dtype)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None):
        """Without ``residual``: returns ``norm(x)``.

        With ``residual``: returns ``(norm(x + residual), x + residual)`` so a decoder layer
        carries the residual stream without a separate add (the sum is in the model dtype,
        like HF's ``residual + hidden_states``).
        """
        if use_fused(self.fused, x):
            out = self.fused.rms_norm(x, residual, self.weight, self.eps)
            return out[0] if residual is None else (out[0], out[1])
        if residual is None:
            return self._norm(x)
        x = x + residual
        return self._norm(x), x
