"""How long it takes to rebuild a request's KV: PrefillReload(r) of METHOD 2.2.

Two models behind one method, ``seconds(num_tokens)``:
- ``PrefillCost``: a quadratic fit ``a*n^2 + b*n + c`` of prefill time against context length
  (no CPU offload: evicted KV is recomputed). ``PrefillCost.fit(points)`` is the least-squares
  fit of profiled (tokens, seconds) points. A prefill model also prices a decode step
  (``decode_seconds(num_seqs, context_tokens)``: ``d0 + d1 * seqs + d2 * context``), which
  the door's wait bound needs (``scheduler/admission.py``).
- ``OffloadCost``: KV bytes over the host-device link bandwidth plus a fixed latency (with a
  host tier, evicted KV is reloaded).

Defaults: Llama-3.1-8B on one H100 (../shared/calibration/h100-llama3.1-8b-torch-reference.json:
prefill of 1k-8k uncached tokens; CUDA-graph decode of 1-256 sequences at 1k-16k contexts,
within 2% of the fit; pinned host<->device 55 GB/s; 128 KiB of KV per token).
The simulator and the engine replace them with fitted coefficients via
``Scheduler.set_reload_cost(...)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class ReloadCostModel(Protocol):
    def seconds(self, num_tokens: int) -> float: ...


class PrefillModel(ReloadCostModel, Protocol):
    """A recompute model that also prices a decode step. ``measured``: its answers rest on
    this engine's (or the simulated engine's) own costs, not on a prior from another machine;
    ``version`` changes whenever its answers do (an online fit's refit)."""

    @property
    def measured(self) -> bool: ...

    @property
    def version(self) -> int: ...

    def decode_seconds(self, num_seqs: int, context_tokens: int) -> float:
        """One decode step of ``num_seqs`` sequences holding ``context_tokens`` in all."""
        ...


@dataclass(frozen=True)
class PrefillCost:
    a: float = 5.25e-10       # s / token^2   (fitted on the H100 calibration, n = 1k..8k)
    b: float = 2.51e-5        # s / token
    c: float = 5.57e-3        # s
    d0: float = 8.99e-3       # s per decode step  (fitted on the H100 calibration's decode,
    d1: float = 9.39e-6       # s / sequence        CUDA graphs)
    d2: float = 4.17e-8       # s / context token

    # A fit of a profile (the calibration's, or one installed for a known machine): fixed.
    measured = True
    version = 0

    def seconds(self, num_tokens: int) -> float:
        n = float(num_tokens)
        return max(0.0, self.a * n * n + self.b * n + self.c)

    def decode_seconds(self, num_seqs: int, context_tokens: int) -> float:
        return self.d0 + self.d1 * num_seqs + self.d2 * context_tokens

    @classmethod
    def fit(cls, points: list[tuple[float, float]]) -> "PrefillCost":
        """Least-squares quadratic through (tokens, seconds) points (>= 3 distinct lengths)."""
        if len({n for n, _ in points}) < 3:
            raise ValueError("a quadratic fit needs at least 3 distinct context lengths")
        # Normal equations of [n^2, n, 1] @ [a, b, c] = t, solved by Gaussian elimination.
        rows = [[n * n, n, 1.0] for n, _ in points]
        m = [[sum(r[i] * r[j] for r in rows) for j in range(3)] for i in range(3)]
        v = [sum(r[i] * t for r, (_, t) in zip(rows, points)) for i in range(3)]
        for col in range(3):
            piv = max(range(col, 3), key=lambda r: abs(m[r][col]))
            m[col], m[piv], v[col], v[piv] = m[piv], m[col], v[piv], v[col]
            for r in range(3):
                if r != col and m[r][col]:
                    f = m[r][col] / m[col][col]
                    m[r] = [x - f * y for x, y in zip(m[r], m[col])]
                    v[r] -= f * v[col]
        return cls(*(v[i] / m[i][i] for i in range(3)))


@dataclass(frozen=True)
class OffloadCost:
    bytes_per_token: float = 131072.0     # Llama-3.1-8B: 32 layers * 2 * 8 heads * 128 * 2 B
    bandwidth: float = 55e9               # bytes / s, pinned host -> device
    latency: float = 1e-4                 # s, per reload (launch + sync)

    def seconds(self, num_tokens: int) -> float:
        return self.latency + num_tokens * self.bytes_per_token / self.bandwidth
