"""The TTL argmax, cold start, T and eta windows, reload-cost models (METHOD 2.2)."""
import math
import random

import pytest

from continuum.kv_ttl.predictor import COLD, POOLED, TOOL, DurationPredictor
from continuum.kv_ttl.reload_cost import OffloadCost, PrefillCost
from continuum.kv_ttl.ttl import EtaEstimator, SlidingMean, cold_start_ttl, solve_ttl


@pytest.mark.parametrize("samples,benefit,want", [
    # values at 0, 1, 2, 3, 10: 0, .25*5-1, .5*5-2, .75*5-3, 5-10 -> 3 wins with 0.75
    ([1, 2, 3, 10], 5.0, 3),
    # every sample costs more than it can save: never pin
    ([1, 2, 3, 10], 2.0, 0.0),
    # duplicates count together: P(1) = 3/4 -> 0.75*2-1 = 0.5 beats P(5)*2-5
    ([1, 1, 1, 5], 2.0, 1),
    # tie (1 at tau=1 and at tau=3): the smaller TTL wins
    ([1, 3], 4.0, 1),
    # durations of zero: P(0) = 1/2, value 0.5*B at tau 0 beats 1*B - 4 for B = 6
    ([0, 4], 6.0, 0.0),
    ([0.5], 0.4, 0.0),
    ([], 10.0, 0.0),
])
def test_solve_ttl_hand_computed(samples, benefit, want):
    assert solve_ttl(sorted(samples), benefit) == want


def test_solve_ttl_is_exact_and_bounded_by_the_benefit():
    rng = random.Random(7)
    for _ in range(200):
        s = sorted(round(rng.expovariate(1.0), 3) for _ in range(rng.randint(1, 30)))
        b = rng.uniform(0, 5)
        tau = solve_ttl(s, b)
        assert tau <= b
        value = lambda t: sum(x <= t for x in s) / len(s) * b - t
        # no TTL on a fine grid (or at a sample) does better than the chosen one
        grid = [i / 100 for i in range(0, 600)] + s
        assert value(tau) >= max(value(t) for t in grid) - 1e-12


def test_cold_start_closed_form():
    assert cold_start_ttl(0.5, 2.0) == pytest.approx(math.log(2.5))
    assert cold_start_ttl(0.3, 0.5) == 0.0
    assert cold_start_ttl(0.0, 1.0) == 0.0        # B must exceed 1 s
    # it is the optimum of (1 - e^-tau) * B - tau
    b = 3.0
    f = lambda t: (1 - math.exp(-t)) * b - t
    t = cold_start_ttl(1.0, 2.0)
    assert all(f(t) >= f(t + d) for d in (-0.01, 0.01))


def test_predictor_three_levels_with_k_100():
    p = DurationPredictor(k=100)
    ls = [0.1, 0.2, 0.1, 0.2, 0.1] * 20         # stationary: 3 of every 5 calls take 0.1 s
    for d in ls[:60]:
        p.observe("ls", d)
    for i in range(39):
        p.observe("git", 1.0)
    assert p.total_seen == 99 and p.level("ls") == COLD and p.samples("ls") is None
    p.observe("git", 2.0)                      # 100 in total, each tool under 100
    assert p.level("ls") == POOLED and p.level("git") == POOLED and p.level(None) == POOLED
    assert len(p.samples("git")) == 100 and p.cdf("ls", 0.1) == 0.36
    for d in ls[60:]:
        p.observe("ls", d)                     # ls reaches 100
    assert p.level("ls") == TOOL and p.level("git") == POOLED and p.level("pytest") == POOLED
    assert p.cdf("ls", 0.1) == 0.6 and p.cdf("ls", 0.2) == 1.0
    assert p.mean("ls") == pytest.approx((60 * 0.1 + 40 * 0.2) / 100)
    assert p.mean("pytest") == pytest.approx(p.pooled.mean())
    assert p.num_drift_detections == 0


def test_predictor_history_is_bounded_and_negative_durations_clip():
    p = DurationPredictor(k=2, history=3)
    for d in (5.0, -1.0, 1.0, 2.0, 3.0):
        p.observe("x", d)
    assert p.samples("x") == [1.0, 2.0, 3.0] and p.total_seen == 5
    p2 = DurationPredictor(k=1, history=3)
    p2.observe("x", -1.0)
    assert p2.samples("x") == [0.0]


def test_sliding_mean_window_and_initial_value():
    m = SlidingMean(window=3)
    assert m.value == 0.0
    for x in (1, 2, 3, 10):
        m.add(x)
    assert m.value == pytest.approx(5.0)      # last three: 2, 3, 10


def test_eta_fixed_turn_counts_give_one():
    e = EtaEstimator()
    assert e.value == 1.0                     # nothing completed yet
    for _ in range(20):
        e.add_program(6)
    assert e.value == pytest.approx(1.0, abs=1e-9)
    e2 = EtaEstimator()
    for _ in range(5):
        e2.add_program(2)                     # only k = 1: undefined correlation -> 1
    assert e2.value == 1.0


def test_eta_geometric_turn_counts_give_about_zero():
    # (with the default window of 256 programs the estimate scatters by about +-0.15)
    rng = random.Random(1)
    e = EtaEstimator(window=4096)
    for _ in range(4096):
        n = 1
        while rng.random() > 0.2:              # geometric, mean 5 turns
            n += 1
        e.add_program(n)
    assert abs(e.value) < 0.05


def test_eta_window_forgets_old_programs():
    e = EtaEstimator(window=4)
    for n in (2, 30, 3, 50):
        e.add_program(n)
    for _ in range(4):
        e.add_program(7)
    assert e.value == pytest.approx(1.0, abs=1e-9) and len(e.programs) == 4


def test_prefill_fit_recovers_a_quadratic_and_offload_cost():
    truth = PrefillCost(2e-9, 3e-5, 0.01)
    pts = [(n, truth.seconds(n)) for n in (1024, 2048, 4096, 8192, 16384)]
    fit = PrefillCost.fit(pts)
    assert fit.a == pytest.approx(2e-9) and fit.b == pytest.approx(3e-5) and fit.c == pytest.approx(0.01)
    with pytest.raises(ValueError):
        PrefillCost.fit([(1, 1.0), (2, 2.0)])
    # defaults: ~30 ms per 1k tokens of Llama-3.1-8B on an H100; 1k tokens reload in ~2.5 ms
    assert 0.025 < PrefillCost().seconds(1024) < 0.04
    assert OffloadCost().seconds(1000) == pytest.approx(1e-4 + 1000 * 131072 / 55e9)


def test_ttl_counts_only_calls_the_cache_would_not_survive():
    from continuum.kv_ttl.ttl import solve_ttl
    s = [1.0, 2.0, 3.0, 10.0]
    # the paper's argmax: 3 s wins (0.75 * 8 - 3 = 3 > 0.5 * 8 - 2 = 2 > 0.25 * 8 - 1 = 1)
    assert solve_ttl(s, 8.0) == 3.0
    # calls up to 2 s survive in the cache anyway: only the 3 s call is won: 0.25 * 8 - 3 < 0
    assert solve_ttl(s, 8.0, survives=2.0) == 0.0
    assert solve_ttl(s, 20.0, survives=2.0) == 3.0       # 0.25 * 20 - 3 = 2 > 0.5 * 20 - 10 = 0
    assert solve_ttl(s, 40.0, survives=2.0) == 10.0      # 0.5 * 40 - 10 = 10 > 0.25 * 40 - 3 = 7
    assert solve_ttl(s, 1e9, survives=10.0) == 0.0       # the cache keeps every call: no pin


def test_eviction_horizon_is_free_blocks_over_the_allocation_rate():
    from continuum.kv_ttl.eviction import EvictionHorizon
    h = EvictionHorizon(time_constant=10.0)
    assert h.seconds == math.inf                          # nothing allocated yet
    h.update(0.0, 0, 100)
    h.update(1.0, 10, 90)                                 # 10 blocks in 1 s: rate 10 / 10 = 1
    assert h.rate == pytest.approx(1.0) and h.seconds == pytest.approx(90.0)
    assert h.seconds_with(400) == pytest.approx(490.0)   # a host tier of 400 blocks behind it
    h.update(2.0, 20, 80)                                 # decays by e^-0.1, adds 1
    assert h.rate == pytest.approx(math.exp(-0.1) + 1.0)
    assert h.seconds == pytest.approx(80.0 / (math.exp(-0.1) + 1.0))
    h.update(2.0, 30, 70)                                 # no time passed: counted at the next update
    assert h.rate == pytest.approx(math.exp(-0.1) + 1.0)
    h.update(1002.0, 30, 70)                              # long after: only those 10 blocks remain
    assert h.rate == pytest.approx(1.0) and h.seconds == pytest.approx(70.0)
    h.update(2002.0, 30, 70)                              # idle for long: the rate decays to ~0
    assert h.seconds == math.inf and h.seconds_with(400) == math.inf
