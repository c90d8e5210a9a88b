"""Step-time cost model fitted to a profile (profile.py).

One engine step costs

    t = overhead + c0 + c1 * prefill_tokens + c2 * prefill_attention + c3 * decode_seqs
          + c4 * decode_context + c5 * [decode_seqs > 0]
          + c6 * mixed_decode_seqs + c7 * mixed_decode_context

where, over the step's scheduled chunks, ``prefill_tokens`` sums the new tokens of chunks
longer than one token, ``prefill_attention`` sums n * (start + n / 2) (query-key pairs of a
causal chunk of n tokens after ``start`` cached ones), ``decode_seqs`` counts one-token chunks
and ``decode_context`` sums their sequence lengths. c0 is the weight-read floor shared by all
steps; c5 is a fixed cost of the decode path (on CPUs the paged decode attention has its own
per-step overhead; on GPUs the fit puts it near 0). c6, c7 price decodes that share a step with
a prefill chunk beyond their pure-decode cost (on CPUs they take the varlen attention path);
they are fitted only from a profile's optional ``mixed`` rows, else 0. The coefficients are a non-negative least-squares fit in *relative* error to every
profile row (each row is a pure-prefill or pure-decode step; mixed steps are assumed additive,
an approximation). Swaps cost bytes / link bandwidth + a fixed latency.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from continuum.kv_ttl.step_cost import StepShape, nnls, step_shape
from continuum.sim.profile import kv_bytes_per_token


class CostModel:
    def __init__(self, profile: dict[str, Any]):
        self.profile = profile
        self.overhead = float(profile.get("step_overhead_s", 0.0))
        rows, ys = [], []
        for r in profile["prefill"]:
            n, c = r["new"], r["cached"]
            rows.append(StepShape(n, n * (c + n / 2)).features())
            ys.append(r["seconds"])
        for r in profile["decode"]:
            b, l = r["batch"], r["context"]
            rows.append(StepShape(decode_seqs=b, decode_context=b * l).features())
            ys.append(r["seconds"])
        for r in profile.get("mixed", []):
            n, c, b, l = r["new"], r["cached"], r["batch"], r["context"]
            rows.append(StepShape(n, n * (c + n / 2), b, b * l).features())
            ys.append(r["seconds"])
        a, y = np.array(rows, dtype=float), np.array(ys, dtype=float)
        w = 1.0 / y                      # relative error: small steps matter as much as big ones
        self.coef = nnls(a * w[:, None], y * w)
        self._c = [float(x) for x in self.coef]     # plain floats: the hot path avoids numpy
        pred = a @ self.coef
        self.fit_rel_errors = ((pred - y) / y).tolist()
        self.bytes_per_token = kv_bytes_per_token(profile)
        bw = profile.get("bandwidth", {})
        self.h2d = float(bw.get("h2d_Bps", 25e9))
        self.d2h = float(bw.get("d2h_Bps", 25e9))
        self.swap_latency = float(bw.get("swap_latency_s", 1e-4))

    # -- step time -------------------------------------------------------------------------
    def shape_time(self, s: StepShape) -> float:
        c = self._c
        return (self.overhead + c[0] + c[1] * s.prefill_tokens + c[2] * s.prefill_attention
                + c[3] * s.decode_seqs + c[4] * s.decode_context + (c[5] if s.decode_seqs else 0.0)
                + ((c[6] * s.decode_seqs + c[7] * s.decode_context) if s.prefill_tokens else 0.0))

    def step_time(self, chunks) -> float:
        return self.shape_time(step_shape(chunks))

    def swap_time(self, num_tokens_in: int, num_tokens_out: int) -> float:
        t = 0.0
        if num_tokens_in:
            t += self.swap_latency + num_tokens_in * self.bytes_per_token / self.h2d
        if num_tokens_out:
            t += self.swap_latency + num_tokens_out * self.bytes_per_token / self.d2h
        return t

    # -- isolated times (the ideal JCT) ----------------------------------------------------
    def turn_time(self, cached: int, new: int, output: int, chunk: int) -> float:
        """A turn alone on the engine: prefill ``new`` tokens after ``cached`` in chunks of at
        most ``chunk`` (the last chunk samples the first output token), then output - 1 decode
        steps. Mirrors the scheduler's chunked prefill exactly, so a lone program in the
        simulator takes exactly this long."""
        t, pos, left = 0.0, cached, new
        while left > 0:
            n = min(left, chunk)
            t += self.step_time([(pos, n)])
            pos += n
            left -= n
        for _ in range(output - 1):
            t += self.step_time([(pos, 1)])
            pos += 1
        return t

    # -- capacity ----------------------------------------------------------------------------
    def kv_capacity_tokens(self, gpu_memory_utilization: float = 0.9,
                           activation_reserve: float = 0.03) -> int:
        """KV tokens that fit: usable device memory minus weights minus an activation reserve."""
        mem = self.profile["memory"]
        free = mem["device_bytes"] * (gpu_memory_utilization - activation_reserve) - mem["weights_bytes"]
        return max(int(free // self.bytes_per_token), 0)

    def summary(self) -> dict[str, Any]:
        return {"coef": dict(zip(["c0_s", "per_prefill_token_s", "per_attn_pair_s", "per_decode_seq_s",
                                  "per_decode_ctx_token_s", "decode_step_s", "mixed_per_decode_seq_s",
                                  "mixed_per_decode_ctx_token_s"], map(float, self.coef))),
                "overhead_s": self.overhead,
                "fit_max_abs_rel_error": max(map(abs, self.fit_rel_errors)) if self.fit_rel_errors else 0.0}
