"""What an engine step costs, as a linear model of the step's shape, and the engine's online fit
of it: the measured counterpart of the H100 defaults in ``reload_cost.py``.

One step costs

    t = c0 + c1 * prefill_tokens + c2 * prefill_attention + c3 * decode_seqs
          + c4 * decode_context + c5 * [decode_seqs > 0]
          + c6 * mixed_decode_seqs + c7 * mixed_decode_context

over the step's scheduled chunks (``StepShape``; the simulator's ``CostModel`` fits the same
features to a profile and says what each one prices). ``OnlineStepCost`` fits the coefficients
to the engine's own steps as they run (a non-negative least squares in relative error over a
sliding window of recent steps), and ``MeasuredPrefill`` turns them into PrefillReload(n) of
METHOD 2.2: the time to recompute n tokens alone, in chunks of the step's token budget.

Why online: the reload cost is one side of every TTL's cost-benefit, and a model fitted on
other hardware is wrong by the ratio of speeds (the H100 default understates this project's
2-core CPU engine 4x to 27x for a 128-token prefill, ``benchmarks/results/wait-rounds/``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from continuum.kv_ttl.reload_cost import PrefillCost

NUM_FEATURES = 8


def nnls(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Least squares with x >= 0 by dropping the most negative coefficient until none is
    (exact for these few well-conditioned features; numpy only, no scipy)."""
    active = list(range(a.shape[1]))
    x = np.zeros(a.shape[1])
    while active:
        sol, *_ = np.linalg.lstsq(a[:, active], b, rcond=None)
        if (sol >= 0).all():
            x[:] = 0
            x[active] = sol
            return x
        active.pop(int(np.argmin(sol)))
    return x


@dataclass
class StepShape:
    prefill_tokens: int = 0
    prefill_attention: float = 0.0
    decode_seqs: int = 0
    decode_context: int = 0

    def features(self) -> list[float]:
        mixed = self.prefill_tokens > 0
        return [1.0, self.prefill_tokens, self.prefill_attention, self.decode_seqs, self.decode_context,
                1.0 if self.decode_seqs else 0.0,
                self.decode_seqs if mixed else 0.0, self.decode_context if mixed else 0.0]


def step_shape(chunks: Iterable[tuple[int, int]]) -> StepShape:
    """The shape of a step of ``chunks``: (start, num_new_tokens) pairs. A one-token chunk is a
    decode (its context is start + 1); a longer one a prefill chunk of n * (start + n / 2)
    query-key pairs (causal attention after ``start`` cached tokens)."""
    s = StepShape()
    for start, n in chunks:
        if n == 1:
            s.decode_seqs += 1
            s.decode_context += start + 1
        else:
            s.prefill_tokens += n
            s.prefill_attention += n * (start + n / 2)
    return s


class OnlineStepCost:
    """The step-cost coefficients fitted to the last ``window`` observed steps.

    ``observe`` records one executed step (its chunks and its measured seconds); every
    ``refit_every`` observations the coefficients are refitted, by the non-negative least
    squares in relative error that ``CostModel`` uses on a profile (so a 2 ms decode step
    weighs as much as a 2 s prefill). ``coef`` is None until the window holds ``min_prefill``
    steps with a prefill chunk: before that the prefill coefficients rest on nothing, and
    ``MeasuredPrefill`` answers with its prior. The window is the forgetting: a change of
    speed (another load on the host, a thermal limit) is followed within ``window`` steps.

    Invariant: ``coef``, when set, has ``NUM_FEATURES`` non-negative entries fitted to steps
    of this engine only. Plain floats and numpy; no clock is read (the caller measures).
    """

    def __init__(self, window: int = 2048, refit_every: int = 64, min_prefill: int = 16):
        if window < 1 or refit_every < 1:
            raise ValueError("window and refit_every must be >= 1")
        self.window, self.refit_every, self.min_prefill = window, refit_every, min_prefill
        self._rows = np.zeros((window, NUM_FEATURES))
        self._secs = np.zeros(window)
        self._n = 0                 # steps observed in all
        self.coef: list[float] | None = None
        self.num_fits = 0           # fits made (each one changes ``coef``)

    def observe(self, chunks: Iterable[tuple[int, int]], seconds: float) -> None:
        if not seconds > 0.0:       # a clock that did not move (or NaN) says nothing
            return
        i = self._n % self.window
        self._rows[i] = step_shape(chunks).features()
        self._secs[i] = seconds
        self._n += 1
        if self._n % self.refit_every == 0:
            self.refit()

    def refit(self) -> None:
        """Fit the coefficients to the window now (``observe`` calls it every ``refit_every``)."""
        k = min(self._n, self.window)
        a, y = self._rows[:k], self._secs[:k]
        if int((a[:, 1] > 0).sum()) < self.min_prefill:
            return
        w = 1.0 / y
        self.coef = [float(x) for x in nnls(a * w[:, None], y * w)]
        self.num_fits += 1

    def seconds(self, shape: StepShape) -> float | None:
        """The fitted time of a step of ``shape``; None before the first fit."""
        if self.coef is None:
            return None
        return float(np.dot(self.coef, shape.features()))

    def snapshot(self) -> dict[str, float]:
        """The fit for /metrics (``step_cost_snapshot``)."""
        return step_cost_snapshot(self.coef, self._n)


def step_cost_snapshot(coef: list[float] | None, steps: float) -> dict[str, float]:
    """The ``step_cost_*`` keys: steps the coefficients rest on, whether there are any, and the
    ones that price a recompute (a step's floor, per prefill token, per query-key pair; 0
    before a fit). The engine reports its online fit, a simulated replica its cost model's."""
    c = coef or [0.0] * 3
    return {"step_cost_steps_observed_total": float(steps),
            "step_cost_fitted": 1.0 if coef is not None else 0.0,
            "step_cost_step_floor_s": c[0], "step_cost_per_prefill_token_s": c[1],
            "step_cost_per_attention_pair_s": c[2]}


class MeasuredPrefill:
    """PrefillReload(n) from an ``OnlineStepCost``: n tokens recomputed alone in chunks of at
    most ``chunk`` tokens (the scheduler's token budget). The chunks' attention telescopes,
    sum of n_i * (start_i + n_i / 2) = n^2 / 2, so the time is

        ceil(n / chunk) * c0 + c1 * n + c2 * n^2 / 2.

    ``decode_seconds`` prices a decode step with the same fit. Before the fit exists (an
    engine's first steps) both answer with ``prior``, and ``measured`` is False: the prior is
    another machine's (an H100's), which a slow host's steps can exceed a hundredfold.
    ``version`` changes with every refit (what was priced before may be stale)."""

    def __init__(self, fit: OnlineStepCost, chunk: int, prior: PrefillCost | None = None):
        if chunk < 1:
            raise ValueError("chunk must be >= 1")
        self.fit, self.chunk, self.prior = fit, chunk, prior or PrefillCost()

    @property
    def measured(self) -> bool:
        return self.fit.coef is not None

    @property
    def version(self) -> int:
        return self.fit.num_fits

    def seconds(self, num_tokens: int) -> float:
        c = self.fit.coef
        if c is None:
            return self.prior.seconds(num_tokens)
        n = max(int(num_tokens), 1)
        return -(-n // self.chunk) * c[0] + c[1] * n + c[2] * n * n / 2

    def decode_seconds(self, num_seqs: int, context_tokens: int) -> float:
        """One decode step of ``num_seqs`` sequences holding ``context_tokens`` in all."""
        if self.fit.coef is None:
            return self.prior.decode_seconds(num_seqs, context_tokens)
        return self.fit.seconds(StepShape(decode_seqs=num_seqs, decode_context=context_tokens))
