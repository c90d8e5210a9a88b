"""Simulator: the real Scheduler on a virtual clock, with the fitted cost model."""
import pytest

from continuum.bench.generators import generate
from continuum.bench.metrics import summarize
from continuum.bench.replay import poisson_arrivals
from continuum.sim.cost_model import CostModel
from continuum.sim.profile import load_profile
from continuum.sim.simulator import SimConfig, simulate


@pytest.fixture(scope="module")
def cost():
    return CostModel(load_profile("h200-llama3.1-8b"))


def test_cost_model_fits_the_calibration(cost):
    assert cost.summary()["fit_max_abs_rel_error"] < 0.2
    # decode at batch 1 ~7.2 ms, prefill ~29 ms per 1k tokens on the H200 (calibration README)
    assert cost.step_time([(1023, 1)]) == pytest.approx(0.0072, rel=0.1)
    assert cost.step_time([(0, 1024)]) == pytest.approx(0.0287, rel=0.15)


def test_one_program_alone_runs_at_its_ideal(cost):
    progs = generate("swe", 1, seed=0, scale=0.2)
    r = simulate(progs, [0.0], cost, SimConfig(num_blocks=4096, max_num_batched_tokens=512))
    p = r.programs[0]
    assert p.jct == pytest.approx(p.ideal, rel=1e-9, abs=1e-9)


def _small(cost, policy, jps, n=24, seed=0):
    progs = generate("swe", n, seed=seed, scale=0.1)
    return simulate(progs, poisson_arrivals(n, jps, seed), cost,
                    SimConfig(policy=policy, num_blocks=600, max_num_batched_tokens=1024, seed=seed))


def test_same_seed_same_results(cost):
    a, b = _small(cost, "vllm", 2.0), _small(cost, "vllm", 2.0)
    assert [p.jct for p in a.programs] == [p.jct for p in b.programs]
    assert a.stats["steps_total"] == b.stats["steps_total"]


def test_vllm_overload_loses_prefix_hits(cost):
    low, high = _small(cost, "vllm", 0.05), _small(cost, "vllm", 20.0)
    s_low, s_high = summarize(low.programs, low.stats), summarize(high.programs, high.stats)
    assert s_low["completed"] == s_high["completed"] == 24
    assert s_high["prefix_hit_rate"] < s_low["prefix_hit_rate"]
    assert s_high["jct_over_ideal_mean"] > s_low["jct_over_ideal_mean"] >= 0.999


def test_every_available_policy_completes(cost):
    from continuum.bench.runner import available_policies
    for pol in available_policies():
        r = _small(cost, pol, 5.0, n=12)
        assert all(p.finish is not None for p in r.programs), pol


def test_hidden_program_ids_are_recognised_from_token_prefixes(cost):
    """SimConfig.hide_program_ids: the turns go out without ids; the recogniser must give each
    program one id of its own, and the scheduler then sees the same programs as with ids."""
    progs = generate("swe", 24, seed=0, scale=0.1)
    arrivals = poisson_arrivals(24, 2.0, 0)
    cfg = dict(policy="continuum", num_blocks=600, max_num_batched_tokens=1024, seed=0)
    hidden = simulate(progs, arrivals, cost, SimConfig(hide_program_ids=True, **cfg))
    given = simulate(progs, arrivals, cost, SimConfig(**cfg))
    used = {p.program_id: {t.program_id_used for t in p.turns} for p in hidden.programs}
    assert all(len(ids) == 1 and None not in ids for ids in used.values())
    assert len({next(iter(ids)) for ids in used.values()}) == 24          # no merges
    assert all(t.program_id_used is None for p in given.programs for t in p.turns)
    # the scheduler saw the same programs: the same schedule
    assert [p.jct for p in hidden.programs] == pytest.approx([p.jct for p in given.programs], rel=1e-9)


def test_hidden_program_ids_reach_the_scheduler_as_inferred():
    """The replayer's id-less turn carries what the server would set: the recognised program,
    marked inferred (the scheduler keeps an inferred program admitted after an answered turn)."""
    from continuum.bench.replayer import TurnSend, hide_program_id
    from continuum.kv_ttl.recognizer import ProgramRecognizer
    from continuum.request import AgentInfo
    from continuum.sampling_params import SamplingParams

    turn = TurnSend("p#0", list(range(40)), SamplingParams(max_tokens=4),
                    AgentInfo("p", 0, False, "human"), 0.0)
    sent, att = hide_program_id(turn, ProgramRecognizer(block_size=16))
    assert att.inferred and sent.agent.inferred
    assert sent.agent.program_id == att.program_id != "p"
    assert (sent.agent.turn, sent.agent.is_last_step, sent.agent.tool_name) == (None, False, None)
