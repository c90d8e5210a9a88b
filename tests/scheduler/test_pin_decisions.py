"""Every completed turn gets one pin decision: why its KV was or was not pinned
(``PIN_DECISIONS``), counted in the stats and kept on the request."""
import pytest

from continuum.kv_ttl.reload_cost import PrefillCost
from continuum.scheduler.policy import PIN_DECISIONS
from tests.scheduler.agent_helpers import areq, make_sched, run_until_idle


def finish(s, req, now=0.0):
    s.add_request(req)
    run_until_idle(s, now)
    return req.pin_decision


def counts(s) -> dict[str, int]:
    return {k: v for k, v in s.stats.pin_decisions.items() if v}


def test_every_reason_is_counted_from_zero():
    s = make_sched("continuum")
    assert s.stats.pin_decisions == dict.fromkeys(PIN_DECISIONS, 0)
    assert set(s.stats.pin_decision_counts()) == {f"pin_decisions_{r}_total" for r in PIN_DECISIONS}


def test_turns_without_a_following_tool_call():
    s = make_sched("continuum")
    assert finish(s, areq("a", 8, 0.0, program=None)) == "no_program"
    assert finish(s, areq("b", 8, 0.0, program="p", last=True)) == "last_step"
    assert finish(s, areq("c", 8, 0.0, program="q", tool=None)) == "no_tool_call"
    assert counts(s) == {"no_program": 1, "last_step": 1, "no_tool_call": 1}


def test_continuum_cold_start_pins_nothing_when_reload_is_cheap_then_pins_when_dear():
    s = make_sched("continuum")
    s.set_reload_cost(prefill=PrefillCost(0.0, 0.0, 0.5))      # T + reload = 0.5 s: ln <= 0
    r = areq("a", 8, 0.0, program="p")
    assert finish(s, r) == "cold_start" and r.pin_ttl == 0.0
    s.set_reload_cost(prefill=PrefillCost(0.0, 0.0, 3.0))      # ln(3) s
    r = areq("b", 8, 0.0, program="q")
    assert finish(s, r) == "pinned" and r.pin_ttl == pytest.approx(1.0986, abs=1e-3)
    assert counts(s) == {"cold_start": 1, "pinned": 1}


def test_continuum_with_history_reload_cheap():
    s = make_sched("continuum")
    s.set_reload_cost(prefill=PrefillCost(0.0, 0.0, 0.1))
    for _ in range(100):
        s.agents.ctx.predictor.observe("ls", 5.0)              # calls far longer than a reload
    assert finish(s, areq("a", 8, 0.0, program="p")) == "reload_cheap"


def test_continuum_plus_cache_survives_and_low_duty():
    s = make_sched("continuum+")
    s.set_reload_cost(prefill=PrefillCost(0.0, 0.0, 3.0))      # cold TTL ln 3 > 0 ...
    # ... but an idle cache keeps freed blocks for ever (horizon inf): no pin needed
    assert finish(s, areq("a", 8, 0.0, program="p")) == "cache_survives"
    for _ in range(100):                 # calls of a minute after turns of < 1 s: a person
        s.agents.ctx.predictor.observe("think", 60.0)          # chatting (the DUTY rule)
    assert finish(s, areq("b", 8, 0.0, program="q", tool="think")) == "low_duty"


@pytest.mark.parametrize("policy", ["vllm", "program-fcfs", "autellix"])
def test_policies_that_never_pin(policy):
    s = make_sched(policy)
    assert finish(s, areq("a", 8, 0.0, program="p")) == "policy_never_pins"


def test_fixed_ttl_pins_then_tool_too_slow_and_budget_limits():
    s = make_sched("fixed-ttl", pin_budget_fraction=0.125)     # 2 of 16 blocks
    r = areq("a", 8, 0.0, program="p")
    assert finish(s, r) == "pinned" and r.pin_ttl == 2.0
    # "a" holds the whole budget (2 full blocks of 4 tokens): "b" does not fit
    assert finish(s, areq("b", 12, 0.0, program="q")) == "over_budget"
    assert finish(s, areq("c", 2, 0.0, program="r", max_tokens=1)) == "nothing_to_pin"  # 3 tokens
    for _ in range(3):
        s.agents.ctx.predictor.observe("git", 10.0)
    assert finish(s, areq("d", 8, 0.0, program="s", tool="git")) == "tool_too_slow"


def test_aborted_turns_decide_nothing():
    from continuum.request import RequestStatus
    s = make_sched("continuum")
    r = areq("a", 8, 0.0, program="p")
    s.add_request(r)
    s.finish_requests("a", RequestStatus.FINISHED_ABORTED, 0.0)
    assert r.pin_decision is None and not counts(s)
