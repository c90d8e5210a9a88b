"""Each policy's ordering and on-finish decisions, with hand-computed expectations."""
import math

import pytest

from continuum.config import SchedulerConfig
from continuum.errors import ConfigError
from continuum.kv_ttl.reload_cost import OffloadCost, PrefillCost
from continuum.request import RequestStatus
from continuum.scheduler.policies import POLICIES
from continuum.scheduler.policies.autellix import AutellixConfig, AutellixPolicy
from continuum.scheduler.policies.continuum import ContinuumPolicy
from continuum.scheduler.policies.infercept import InferCeptConfig, InferCeptPolicy
from continuum.scheduler.policy import FREE, SWAP, make_policy
from tests.scheduler.agent_helpers import areq, make_sched, run_until_idle, step


class ByTool(ContinuumPolicy):
    def choose_ttl(self, tool, context_tokens):
        return 2.0 if tool == "short" else 0.0


def queue_scenario(policy):
    """old (program arrival 0), new (1), pz (3, pinned), pre (4.5, preempted)."""
    s = make_sched(policy)
    s.add_request(areq("old-1", 4, 0.0, "old", tool="none", max_tokens=1))
    s.add_request(areq("pz-1", list(range(10, 14)), 3.0, "pz", tool="short", max_tokens=1))
    step(s, 4.0)
    for r in (areq("old-2", list(range(20, 28)), 5.0, "old"), areq("new-1", list(range(30, 34)), 1.0, "new"),
              areq("pz-2", list(range(40, 48)), 6.0, "pz"), areq("pre-1", list(range(50, 54)), 4.5, "pre"),
              areq("old-3", list(range(60, 64)), 5.5, "old")):
        s.add_request(r)
    s.requests["pre-1"].status = RequestStatus.PREEMPTED
    return s


@pytest.mark.parametrize("policy,order", [
    # preempted > pinned > program arrival > request arrival
    (ByTool(), ["pre-1", "pz-2", "old-2", "old-3", "new-1"]),
    ("program-fcfs", ["pre-1", "old-2", "old-3", "new-1", "pz-2"]),
    ("vllm", ["pre-1", "new-1", "old-2", "old-3", "pz-2"]),
    ("infercept", ["pre-1", "old-2", "old-3", "new-1", "pz-2"]),
])
def test_waiting_order(policy, order):
    s = queue_scenario(policy)
    if isinstance(policy, ByTool):
        assert "pz" in s.agents.pins and "old" not in s.agents.pins
    assert [r.request_id for r in sorted(s.waiting, key=s.policy.waiting_key)] == order


def test_victim_order_is_latest_program_arrival_first():
    s = queue_scenario("continuum")
    ranked = sorted(s.waiting, key=s.policy.victim_key)
    assert [r.request_id for r in ranked][::-1] == ["pre-1", "pz-2", "new-1", "old-3", "old-2"]


def test_registry_and_unknown_policy():
    assert sorted(POLICIES) == ["autellix", "continuum", "continuum+", "fixed-ttl", "infercept", "program-fcfs",
                              "vllm"]
    assert SchedulerConfig().policy == "continuum+"
    with pytest.raises(ConfigError, match="unknown scheduling policy"):
        make_policy("sjf")
    a = make_policy("autellix", SchedulerConfig.from_kwargs(autellix_num_queues=3, autellix_base_quantum=2,
                                                            autellix_beta=4.0))
    assert a.bounds == [2, 6, 14] and a.beta == 4.0


def test_fixed_ttl_pins_two_seconds_only_for_short_tools():
    s = make_sched("fixed-ttl")
    pred = s.agents.ctx.predictor
    pred.observe("ls", 0.5)
    pred.observe("pytest", 30.0)
    s.add_request(areq("a", 8, 0.0, "a", tool="ls", max_tokens=1))
    s.add_request(areq("b", list(range(10, 18)), 0.0, "b", tool="pytest", max_tokens=1))
    s.add_request(areq("c", list(range(20, 28)), 0.0, "c", tool="never-seen", max_tokens=1))
    step(s, 1.0)
    pins = s.agents.pins
    assert pins.get("a").ttl == 2.0 and "b" not in pins
    # an unseen tool falls back to the pooled mean (15.25 s > 2 s): no pin
    assert "c" not in pins


def test_continuum_ttl_cold_start_then_pooled_then_per_tool():
    s = make_sched("continuum")
    pol, ctx = s.policy, s.agents.ctx
    s.set_reload_cost(prefill=PrefillCost(0.0, 0.0, 2.0))       # 2 s to rebuild any context
    ctx.queue_delay.add(1.0)                                     # T = 1
    assert pol.choose_ttl("ls", 100) == pytest.approx(math.log(3.0))   # cold: ln(T + reload)
    for _ in range(60):
        ctx.predictor.observe("ls", 0.5)
    git = [4.0, 2.5, 2.5, 4.0, 2.5] * 20        # stationary: 2 of every 5 calls take 4 s
    for d in git[:40]:
        ctx.predictor.observe("git", d)
    # pooled: B = T*eta + reload = 3; tau 0.5: 0.6*3-0.5 = 1.3; tau 2.5: 0.84*3-2.5; tau 4: 3-4 < 0
    assert pol.choose_ttl("git", 100) == 0.5
    for d in git[40:]:
        ctx.predictor.observe("git", d)
    assert ctx.predictor.num_drift_detections == 0
    # git has 100: 40 of 4.0 and 60 of 2.5: tau 2.5: 0.6*3-2.5 < 0 -> no pin
    assert pol.choose_ttl("git", 100) == 0.0
    s.set_reload_cost(prefill=PrefillCost(0.0, 0.0, 5.0))       # B = 6: tau 4: 6-4=2 > 0.6*6-2.5
    assert pol.choose_ttl("git", 100) == 4.0
    # eta scales T: with geometric-like eta 0, B = reload only (5): tau 2.5: 3-2.5 = .5; 4: 1
    ctx.eta.initial = 0.0
    assert pol.choose_ttl("git", 100) == 4.0
    s.set_reload_cost(prefill=PrefillCost(0.0, 0.0, 3.0))       # B = 3: 1.8-2.5 < 0, 3-4 < 0
    assert pol.choose_ttl("git", 100) == 0.0


def test_continuum_uses_the_offload_cost_with_a_host_tier():
    s = make_sched("continuum", host_blocks=8)
    s.set_reload_cost(prefill=PrefillCost(0.0, 0.0, 100.0), offload=OffloadCost(1.0, 1.0, 0.0))
    assert s.agents.ctx.reload_cost.seconds(3) == 3.0
    assert s.policy.choose_ttl("ls", 3) == pytest.approx(math.log(3.0))


def test_autellix_demotes_by_attained_service_and_promotes_starved_programs():
    pol = AutellixPolicy(AutellixConfig(autellix_num_queues=4, autellix_base_quantum=1, autellix_beta=2.0))   # bounds 1, 3, 7, 15
    s = make_sched(pol, budget=64, max_seqs=1)
    assert pol.bounds == [1, 3, 7, 15]
    s.add_request(areq("a", 4, 0.0, "a", max_tokens=10))
    step(s, 0.0)                                            # step 1: a admitted
    rec = s.agents.programs.get("a")
    assert pol.queue_of("a") == 0
    seen = []
    for i in range(8):
        step(s, 1.0 + i)                                    # steps 2..9
        k = s.agents.ctx.step_no
        seen.append((rec.service_steps(k), pol.queue_of("a")))
    # at step k, a has run in steps 1..k-1
    assert seen == [(1, 1), (2, 1), (3, 2), (4, 2), (5, 2), (6, 2), (7, 3), (8, 3)]
    # b waits while a holds the only seat
    s.add_request(areq("b", list(range(10, 14)), 9.0, "b", max_tokens=1))
    step(s, 9.0)                                            # step 10: b waits from step 10
    b = s.agents.programs.get("b")
    assert b.wait_steps(12) == 2 and b.service_steps(12) == 0 and pol.queue_of("b") == 0
    run_until_idle(s, 10.0)                                 # a finishes, then b runs 1 step
    assert rec.service_steps(100) == 10 and rec.wait_steps(100) == 0
    assert b.service_steps(100) == 1 and b.wait_steps(100) == 1
    # promotion: total waiting / total service >= beta sends a back to queue 0
    s.agents.ctx.step_no = 100
    assert pol.queue_of("a") == 3
    rec.wait_base = 2 * 10
    assert pol.queue_of("a") == 0
    rec.wait_base -= 1
    assert pol.queue_of("a") == 3


def test_autellix_orders_by_queue_then_arrival():
    pol = AutellixPolicy(AutellixConfig(autellix_num_queues=3, autellix_base_quantum=1, autellix_beta=100.0))
    s = make_sched(pol)
    s.add_request(areq("x1", 4, 0.0, "x", max_tokens=1))
    step(s, 0.0)
    s.add_request(areq("x2", list(range(10, 14)), 1.0, "x"))
    s.add_request(areq("y1", list(range(20, 24)), 2.0, "y"))
    # x ran one step (queue 1), y none (queue 0): y first although x2 arrived earlier
    assert (pol.queue_of("x"), pol.queue_of("y")) == (1, 0)
    assert [r.request_id for r in sorted(s.waiting, key=pol.waiting_key)] == ["y1", "x2"]
    s.agents.programs.get("y").service_base = 3             # y now in queue 2
    assert [r.request_id for r in sorted(s.waiting, key=pol.waiting_key)] == ["x2", "y1"]
    s.agents.programs.get("y").service_base = 1             # same queue: request arrival
    assert [r.request_id for r in sorted(s.waiting, key=pol.waiting_key)] == ["x2", "y1"]


def test_infercept_preserves_then_discards_or_swaps_by_min_waste():
    pol = InferCeptPolicy(InferCeptConfig(swap_budget_tokens=8))
    s = make_sched(pol, host_blocks=8)
    s.set_reload_cost(prefill=PrefillCost(0.0, 0.0, 1.0), offload=OffloadCost(1.0, 100.0, 0.0))
    s.add_request(areq("a", 8, 0.0, "a", max_tokens=1))     # pins 2 blocks = 8 tokens
    step(s, 0.0)
    pin = s.agents.pins.get("a")
    assert math.isinf(pin.ttl)
    # nothing running: Preserve = T_int*8, Discard = 1*(8+0) = 8, Swap = 2*(8/100)*8 = 1.28
    assert pol.wastes(0.0, 0.0, 8, 0) == pytest.approx((0.0, 8.0, 1.28))
    assert pol.on_step(0.1) == []                           # 0.8 < 1.28: preserve
    assert pol.on_step(0.5) == [("a", SWAP)]                # 4 > 1.28 and within the link budget
    pol.swap_budget_tokens = 4
    assert pol.on_step(1.5) == [("a", FREE)]                # no link budget: 12 > 8: discard
    pol.swap_budget_tokens = 8
    s.schedule(0.5)                                         # the core executes the swap
    assert "a" not in s.agents.pins and s.stats.pins_released_by_policy == 1
    assert s.kv.stats.swap_out_blocks == 2
    s.check_integrity()


def test_infercept_without_host_tier_only_preserves_or_discards():
    pol = InferCeptPolicy()
    s = make_sched(pol)
    s.set_reload_cost(prefill=PrefillCost(0.0, 0.0, 1.0))
    s.add_request(areq("a", 8, 0.0, "a", max_tokens=1))
    step(s, 0.0)
    assert pol.on_step(0.9) == []                           # 7.2 < 8
    assert pol.on_step(1.1) == [("a", FREE)]
    s.schedule(1.1)
    assert len(s.agents.pins) == 0 and s.kv.pool.counts()["in_use"] == 0
    s.check_integrity()


def test_swap_on_finish_copies_full_blocks_to_the_host_then_frees():
    class SwapOnFinish(ContinuumPolicy):
        def on_finish(self, req, now):
            return SWAP

    s = make_sched(SwapOnFinish(), host_blocks=4)
    s.add_request(areq("a", 10, 0.0, "a", max_tokens=2))
    step(s, 0.0)
    out, _ = step(s, 1.0)
    assert len(s.agents.pins) == 0 and s.kv.pool.counts()["in_use"] == 0
    # blocks 0 and 1 were full (block 2 held 3 tokens, no hash): copied on the next step
    assert s.schedule(2.0).swap_out == [(0, 0), (1, 1)]
    s.check_integrity()
