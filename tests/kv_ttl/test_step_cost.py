"""The engine's online step-cost fit and the reload cost it gives the TTL (step_cost.py).
Synthetic steps from a known linear model (no clock), then the real engine's own steps."""
import random

import pytest

from continuum.kv_ttl.reload_cost import PrefillCost
from continuum.kv_ttl.step_cost import MeasuredPrefill, OnlineStepCost, step_shape

TRUTH = [2e-3, 4e-6, 1.5e-8, 3e-5, 2e-8, 1e-3, 1e-5, 5e-9]


def true_seconds(chunks, coef=TRUTH):
    return sum(c * f for c, f in zip(coef, step_shape(chunks).features()))


def random_step(rng):
    """A pure prefill, a pure decode batch or a mixed step, as chunked prefill produces."""
    kind = rng.choice(["prefill", "decode", "mixed"])
    chunks = []
    if kind != "decode":
        chunks.append((rng.choice([0, 64, 512, 1500]), rng.choice([16, 100, 256, 700, 2048])))
    if kind != "prefill":
        chunks += [(rng.randrange(10, 4000), 1) for _ in range(rng.randrange(1, 40))]
    return chunks


def feed(fit, steps, coef=TRUTH):
    for chunks in steps:
        fit.observe(chunks, true_seconds(chunks, coef))


def test_recovers_the_coefficients_of_noise_free_steps():
    rng = random.Random(0)
    fit = OnlineStepCost(window=512, refit_every=64)
    feed(fit, [random_step(rng) for _ in range(512)])
    assert fit.coef == pytest.approx(TRUTH, rel=1e-6, abs=1e-15)


def test_no_fit_until_enough_prefill_steps_and_the_prior_answers_meanwhile():
    fit = OnlineStepCost(window=256, refit_every=1, min_prefill=16)
    prior = PrefillCost(0.0, 0.0, 7.0)
    reload = MeasuredPrefill(fit, chunk=512, prior=prior)
    feed(fit, [[(100 + i, 1), (200, 1)] for i in range(100)])       # decodes only
    feed(fit, [[(0, 64 + i)] for i in range(15)])                     # 15 prefills: one short
    assert fit.coef is None and reload.seconds(1000) == 7.0
    assert fit.snapshot()["step_cost_fitted"] == 0.0
    feed(fit, [[(0, 300)]])
    assert fit.coef is not None and reload.seconds(1000) != 7.0
    assert fit.snapshot()["step_cost_fitted"] == 1.0


def test_reload_is_the_chunked_prefill_alone_under_the_fit():
    rng = random.Random(1)
    fit = OnlineStepCost(window=512, refit_every=512)
    feed(fit, [random_step(rng) for _ in range(512)])
    chunk = 512
    reload = MeasuredPrefill(fit, chunk)
    # (A last chunk of one token would be priced as a decode by the step model; n avoids it.)
    for n in (2, 511, 512, 514, 1024, 5000, 131072):
        pos, t = 0, 0.0
        while pos < n:                      # the steps the scheduler would run, one by one
            k = min(chunk, n - pos)
            t += fit.seconds(step_shape([(pos, k)]))
            pos += k
        assert reload.seconds(n) == pytest.approx(t, rel=1e-9)
    assert reload.seconds(5000) == pytest.approx(sum(          # and the fit is the truth
        true_seconds([(p, min(chunk, 5000 - p))]) for p in range(0, 5000, chunk)), rel=1e-6)


def test_a_decode_step_is_priced_by_the_prior_then_by_the_fit():
    """The door's round (scheduler/admission.py) prices decode steps with the same model."""
    fit = OnlineStepCost(window=512, refit_every=512)
    prior = PrefillCost(d0=0.25, d1=0.5, d2=0.125)
    reload = MeasuredPrefill(fit, 512, prior=prior)
    assert reload.decode_seconds(4, 8) == 0.25 + 0.5 * 4 + 0.125 * 8
    rng = random.Random(2)
    feed(fit, [random_step(rng) for _ in range(512)])
    # 4 sequences holding 1,000 tokens in all: the decode path's features of the step model
    assert reload.decode_seconds(4, 1000) == pytest.approx(
        TRUTH[0] + 4 * TRUTH[3] + 1000 * TRUTH[4] + TRUTH[5], rel=1e-6)


def test_the_window_forgets_a_speed_that_changed():
    rng = random.Random(2)
    fit = OnlineStepCost(window=256, refit_every=32)
    feed(fit, [random_step(rng) for _ in range(256)])
    slower = [3 * c for c in TRUTH]          # the host got 3x slower
    feed(fit, [random_step(rng) for _ in range(128)], slower)
    assert fit.coef != pytest.approx(slower, rel=1e-3)        # half the window is the old speed
    feed(fit, [random_step(rng) for _ in range(128)], slower)
    assert fit.coef == pytest.approx(slower, rel=1e-6, abs=1e-15)


def test_non_positive_or_nan_times_are_ignored_and_coefficients_stay_non_negative():
    fit = OnlineStepCost(window=64, refit_every=8, min_prefill=4)
    for t in (0.0, -1.0, float("nan")):
        fit.observe([(0, 100)], t)
    assert fit.snapshot()["step_cost_steps_observed_total"] == 0.0
    rng = random.Random(3)
    for _ in range(64):                      # noisy times: the fit may not be exact, but >= 0
        chunks = random_step(rng)
        fit.observe(chunks, true_seconds(chunks) * rng.uniform(0.5, 1.5))
    assert fit.coef is not None and all(c >= 0 for c in fit.coef)
    with pytest.raises(ValueError):
        OnlineStepCost(window=0)
    with pytest.raises(ValueError):
        MeasuredPrefill(fit, chunk=0)


def test_the_engine_fits_its_own_steps_and_the_scheduler_prices_reloads_with_them():
    from continuum.config import EngineArgs
    from continuum.engine.engine import LLMEngine
    from continuum.sampling_params import SamplingParams

    now = [0.0]
    eng = LLMEngine(EngineArgs(model="random:tiny", dtype="float32", num_blocks_override=128,
                               max_model_len=1024, device="cpu"), clock=lambda: now[0])
    reload = eng.scheduler.agents.ctx.prefill_cost
    assert isinstance(reload, MeasuredPrefill) and reload.fit is eng.step_cost
    assert reload.seconds(1000) == PrefillCost().seconds(1000)      # the prior until a fit
    rng = random.Random(4)
    params = SamplingParams(max_tokens=4, ignore_eos=True, temperature=0)
    steps = 0
    while eng.step_cost.coef is None:
        for n in (20, 150, 400):
            eng.add_request([rng.randrange(3, 250) for _ in range(n)], params)
        while eng.has_unfinished_requests():
            eng.step()
            steps += 1
        eng.check_integrity()
        assert steps < 1000
    st = eng.stats()
    assert st["step_cost_fitted"] == 1.0 and st["step_cost_steps_observed_total"] == steps
    assert all(c >= 0 for c in eng.step_cost.coef)
    costs = [reload.seconds(n) for n in (16, 128, 512, 1024)]
    assert costs == sorted(costs) and costs[-1] > 0
    # and the door's round prices decode steps with the fit (more context, no cheaper)
    assert 0 < reload.decode_seconds(8, 128) <= reload.decode_seconds(8, 4096)
    eng.shutdown()
