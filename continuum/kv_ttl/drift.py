"""Online change-point test on a tool's durations (drift-robust TTLs).

A tool's latency can shift (a CI runner slows 4x, a service gets faster). The TTL of METHOD 2.2
is an argmax over the tool's empirical CDF, so a history that mixes the old and the new regime
pins for the wrong time until thousands of new samples have washed the old ones out. This
module decides, after every new duration, whether the last ``W`` durations of a tool (for
each ``W`` of ``WINDOWS``) come from the same distribution as the ones before them (its
*reference*), and if not where the change happened, so that the predictor can drop everything
before it.

The test: two-sample Kolmogorov-Smirnov, with a finite-sample, distribution-free threshold.
``D = sup_x |F_ref(x) - F_win(x)|`` (empirical CDFs of the reference and of the window).
The KS distance is the right yardstick here because the TTL objective ``P(tau) * B - tau`` reads
the CDF directly: if the two CDFs differ by at most ``D`` everywhere, the payoff of every TTL
computed from the stale one is off by at most ``D * B``. Rank-based, it ignores the scale of
durations, so heavy tails and rare slow calls (the generators' mixtures) do not raise false
alarms the way a mean- or variance-based test (a CUSUM on log-durations) would.

Threshold, without asymptotics: if both samples are iid from one distribution ``F`` (any
``F``: heavy-tailed, a mixture, with atoms), the triangle inequality gives
``D <= sup|F_ref - F| + sup|F_win - F|``, and the Dvoretzky-Kiefer-Wolfowitz inequality (with
Massart's constant) bounds each term: ``P(sup|F_n - F| > e) <= 2 exp(-2 n e^2)``. With
``k = len(WINDOWS)`` tests per observation, giving each term of each test ``ALPHA / (2k)``:

    D > sqrt(ln(4k / ALPHA) / (2 n_ref)) + sqrt(ln(4k / ALPHA) / (2 n_win))   => a shift

has probability at most ``ALPHA / k`` per test on a stationary sequence, whatever ``F`` is. By
the union bound (valid however correlated the windows and the overlapping observations are) a
stationary tool raises at most ``ALPHA`` false alarms per observation on average:
``ALPHA = 1e-6`` is <= 0.01 per 10,000 turns, a hundred times under the issue's 1 per 10,000.

Change point: once a test fires, the estimate is the suffix length ``L`` in ``1..W`` (``W``
the window that fired) maximising the scaled statistic ``sqrt(n L / (n + L)) * D(before,
suffix)``, where ``before`` is everything observed before the suffix (the classic KS
change-point estimator). For a clean
shift the new regime's samples are the suffix exactly: a split inside the new regime loses
weight ``sqrt(L)``, a split inside the old one dilutes ``D`` by the old samples it takes in.

The constants (no knob):
- ``ALPHA = 1e-6``: the false-alarm budget above, split evenly between the windows.
- ``WINDOWS = (32, 128)``: the last 32 and the last 128 durations are each tested against the
  durations before them (each at ``ALPHA / 2``, so the union bound still gives ``ALPHA`` per
  observation). A shift moving the CDF by ``D`` somewhere is seen once about
  ``W * threshold / D`` of a window of ``W`` is new, and cannot be seen at all unless the
  window's term ``sqrt(ln(8e6) / (2 W))`` is below ``D``: 0.50 for 32, 0.25 for 128. A 4x
  scale shift of a lognormal tool with sigma <= 0.6 moves the CDF by >= 0.75 and the short
  window finds it after about 20-26 new durations (the long one would need ~50); a wider tool
  (sigma 0.8 plus a slow tail, SWE-like ``python``: D ~0.6) sits at the short window's
  threshold, and the long window finds it after ~60-90 new durations. The latency of a window
  grows like ``sqrt(W)``, its reach (the smallest ``D`` it can see) falls like ``1/sqrt(W)``:
  two windows give the short one's speed on large shifts and the long one's reach on wide
  tools. Smaller drifts are left to the bounded FIFO history.

Invariants: pure functions of the given sorted lists (no clock, no randomness); the
statistic is exact (the supremum of a difference of step functions is attained just at or just
before a jump, all of which are visited).
"""
from __future__ import annotations

import bisect
import math

ALPHA = 1e-6
WINDOWS = (32, 128)                 # ascending: the short window answers first
_LOG_TERM = math.log(4.0 * len(WINDOWS) / ALPHA) / 2.0     # each window tested at ALPHA / len


def threshold(n_ref: int, n_win: int) -> float:
    """The KS distance above which reference (``n_ref``) and window (``n_win``) differ at
    false-alarm probability <= ``ALPHA / len(WINDOWS)`` (module docstring); inf if either is
    empty."""
    if n_ref <= 0 or n_win <= 0:
        return math.inf
    return math.sqrt(_LOG_TERM / n_ref) + math.sqrt(_LOG_TERM / n_win)


def ks_distance(big: list[float], small: list[float], minus: list[float] | None = None) -> float:
    """Exact ``sup_x |F_A(x) - F_B(x)|`` with ``B = small`` and ``A = big`` minus the multiset
    ``minus`` (a sub-multiset of ``big``; all three sorted ascending). O(|small| log |big|).

    ``F_B`` is constant between consecutive points of ``small``, and ``F_A`` non-decreasing, so
    on each such interval the extremes of ``F_A - F_B`` are at its left end (``F_A`` at the
    point) and just before its right end (``F_A`` strictly below the next point)."""
    minus = minus or []
    n_a = len(big) - len(minus)
    n_b = len(small)
    if n_a <= 0 or n_b == 0:
        return 0.0

    def count_le(x: float) -> int:
        return bisect.bisect_right(big, x) - bisect.bisect_right(minus, x)

    def count_lt(x: float) -> int:
        return bisect.bisect_left(big, x) - bisect.bisect_left(minus, x)

    d = count_lt(small[0]) / n_a            # below the first point of B: F_B = 0
    i = 0
    while i < n_b:
        x = small[i]
        while i < n_b and small[i] == x:    # F_B jumps by every copy of x at once
            i += 1
        fb = i / n_b
        d = max(d, abs(count_le(x) / n_a - fb))
        if i < n_b:                         # just before the next point of B
            d = max(d, abs(count_lt(small[i]) / n_a - fb))
    return d


def shifted(history_sorted: list[float], window: list[float]) -> bool:
    """Do the last ``len(window)`` durations (``window``, in arrival order, the tail of the
    history) differ from the ones before them? ``history_sorted`` holds all of them sorted."""
    w = sorted(window)
    n_ref = len(history_sorted) - len(w)
    if n_ref <= 0:
        return False
    return ks_distance(history_sorted, w, w) > threshold(n_ref, len(w))


def shifted_window(history_sorted: list[float], newest_first) -> list[float] | None:
    """The first of ``WINDOWS`` (shortest first) whose last durations differ from the ones
    before them, as that window (oldest first), or None. ``newest_first`` iterates the history
    from its newest duration; a window is tested only when at least as many durations precede
    it (a reference no shorter than the window)."""
    it = iter(newest_first)
    recent: list[float] = []
    for w in WINDOWS:
        if len(history_sorted) < 2 * w:
            break
        for d in it:
            recent.append(d)
            if len(recent) == w:
                break
        window = recent[::-1]
        if shifted(history_sorted, window):
            return window
    return None


def change_point(history_sorted: list[float], window: list[float]) -> int:
    """The number ``L`` (1..len(window)) of most recent durations estimated to come after the
    change: argmax of ``sqrt(n L / (n + L)) * D(before, last L)``; ties go to the shorter
    suffix (the newest data is the surest to be new)."""
    best_l, best = 1, -1.0
    total = len(history_sorted)
    for l in range(1, len(window) + 1):
        suffix = sorted(window[len(window) - l:])
        n = total - l
        if n <= 0:
            break
        stat = math.sqrt(n * l / (n + l)) * ks_distance(history_sorted, suffix, suffix)
        if stat > best + 1e-12:
            best_l, best = l, stat
    return best_l
