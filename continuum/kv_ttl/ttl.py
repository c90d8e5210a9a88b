"""The TTL of METHOD 2.2 and the two running estimates it needs (T and eta).

    tau* = argmax over tau in {0} U S[f] of  P(tau, f) * B - tau,   B = T * eta + PrefillReload(r)

P is a step function that only rises at sample points and ``-tau`` falls between them, so
the maximum over the reals is attained at 0 or at a sample: the search below is exact.
Since P <= 1 and the value at 0 is >= 0, the winner satisfies ``tau* <= B``: a pin is never
held longer than it could save. Ties go to the smaller tau (less memory held).
"""
from __future__ import annotations

import bisect
import math
from collections import deque


def solve_ttl(sorted_samples: list[float], benefit: float, survives: float = 0.0) -> float:
    """Exact argmax of ``P(tau) * benefit - tau`` over ``{0} U samples`` (samples sorted).

    ``survives``: calls up to this long find their KV cached without a pin (the cache's
    eviction horizon), so a pin only gains on the calls between it and tau:
    ``(P(tau) - P(survives)) * benefit - tau`` (the paper's formula at 0)."""
    n = len(sorted_samples)
    if n == 0 or benefit <= 0.0:
        return 0.0
    best_tau, best_val = 0.0, 0.0
    i = bisect.bisect_right(sorted_samples, survives) if survives > 0 else 0
    base = i
    while i < n:
        tau = sorted_samples[i]
        while i < n and sorted_samples[i] == tau:   # P(tau) counts every sample <= tau
            i += 1
        val = ((i - base) / n) * benefit - tau
        if val > best_val:
            best_tau, best_val = tau, val
    return best_tau


def cold_start_ttl(queueing_delay: float, reload_seconds: float) -> float:
    """The optimum under an exponential tool time with mean 1 s and eta = 1: with
    B = T + PrefillReload, maximise (1 - e^-tau) * B - tau: tau = ln(B) if B > 1 s, else 0."""
    b = queueing_delay + reload_seconds
    return math.log(b) if b > 1.0 else 0.0


class SlidingMean:
    """Mean of the last ``window`` samples (T: queueing delay of requests whose KV had been
    evicted). Starts at ``initial`` (0) before any sample."""

    def __init__(self, window: int = 256, initial: float = 0.0):
        self.samples: deque[float] = deque(maxlen=window)
        self.initial = initial
        self._sum = 0.0

    def add(self, x: float) -> None:
        if len(self.samples) == self.samples.maxlen:
            self._sum -= self.samples[0]
        self.samples.append(x)
        self._sum += x

    @property
    def value(self) -> float:
        return self._sum / len(self.samples) if self.samples else self.initial


class EtaEstimator:
    """eta = -Corr(k, N - k) over the pairs k = 1..N-1 of the last ``window`` completed
    programs (N = their number of turns).

    Fixed turn counts give exactly 1 (N - k falls one for one as k rises); geometric counts
    give about 0 (memoryless: turns done say nothing about turns left). ``initial`` (1) is
    used before any pair exists and when the correlation is undefined (a zero variance, e.g.
    every program had two turns), which is the fixed-count case.
    """

    def __init__(self, window: int = 256, initial: float = 1.0):
        self.programs: deque[tuple[float, ...]] = deque(maxlen=window)
        self.turn_counts: deque[int] = deque(maxlen=window)     # N of the same programs
        self.num_added = 0                           # programs added ever (a version)
        self.initial = initial
        self._s = [0.0] * 6                          # n, Sk, Sm, Skk, Smm, Skm

    @staticmethod
    def _sums(n_turns: int) -> tuple[float, ...]:
        ks = range(1, n_turns)
        return (float(n_turns - 1), float(sum(ks)), float(sum(n_turns - k for k in ks)),
                float(sum(k * k for k in ks)), float(sum((n_turns - k) ** 2 for k in ks)),
                float(sum(k * (n_turns - k) for k in ks)))

    def add_program(self, n_turns: int) -> None:
        if len(self.programs) == self.programs.maxlen:
            self._s = [a - b for a, b in zip(self._s, self.programs[0])]
        sums = self._sums(max(n_turns, 1))
        self.programs.append(sums)
        self.turn_counts.append(max(n_turns, 1))
        self.num_added += 1
        self._s = [a + b for a, b in zip(self._s, sums)]

    @property
    def value(self) -> float:
        n, sk, sm, skk, smm, skm = self._s
        if n < 1:
            return self.initial
        vk, vm = skk / n - (sk / n) ** 2, smm / n - (sm / n) ** 2
        if vk <= 1e-12 or vm <= 1e-12:
            return self.initial
        return -(skm / n - (sk / n) * (sm / n)) / math.sqrt(vk * vm)
