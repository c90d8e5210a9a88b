"""continuum+: program admission control (the door), its gate, its bounds, and no wedge.

Every scenario runs the real Scheduler with an injected clock and checks the KV books after
every step (``step`` calls ``check_integrity``). Footprints are computed by hand from the
door's rule: tokens at the end of the current turn + growth per turn x expected turns left.
The door holds only while the cache is under pressure; the threshold scenarios fix the
measured eviction horizon (``Horizon``) so that it is, and the gate's own tests move it.
"""
import math
import random

import pytest

from continuum.request import RequestStatus
from continuum.scheduler import admission
from continuum.scheduler.admission import (COLD_HORIZON_S, DEMOTE, DISENGAGE, DUTY, GATE_S, RELEASE, SMALL_PROMPT_TOKENS,
                                           SMALL_WAIT_S, PEAK_ROUNDS, WAIT_ROUNDS, km_quantile)
from continuum.kv_ttl.reload_cost import PrefillCost
from continuum.kv_ttl.step_cost import MeasuredPrefill, OnlineStepCost
from continuum.scheduler.policies.continuum_plus import ContinuumPlusConfig, ContinuumPlusPolicy
from tests.scheduler.agent_helpers import FixedHorizon as Horizon
from tests.scheduler.agent_helpers import areq, make_sched, run_until_idle, step
from tests.kv_ttl.test_step_cost import feed, random_step


def under_pressure(s, seconds: float = 0.5):
    """Make the cache's measured eviction horizon ``seconds`` (below the gate: the door
    engages at its next decision)."""
    s.agents.ctx.eviction = Horizon(seconds)
    return s


class PinnedPlus(ContinuumPlusPolicy):
    """continuum+ with a fixed 100 s TTL (exact pin expiry)."""

    def choose_ttl(self, tool, context_tokens):
        return 100.0


def unbounded_door() -> ContinuumPlusPolicy:
    """continuum+ whose wait bounds are out of reach (these tests' prompts of tens of tokens are
    chat-sized: 60 s at most otherwise), so that a test sees only what it is about."""
    return ContinuumPlusPolicy(ContinuumPlusConfig(door_max_wait=1e9))


def door_sched(policy=None, num_blocks=100, host_blocks=0, rounds=math.inf, peak_rounds=math.inf):
    """Block size 4. Door statistics seeded so that footprints are exact: mean output 4, mean
    new input 8 (growth 12 tokens per turn), one completed program of 3 turns (R(1) = 2).
    Default policy: ``unbounded_door()``; tests of the bound pass their own. ``rounds`` /
    ``peak_rounds``: the bound in rounds V now / at the peaks (out of reach unless a test is
    about it: these tests' contexts of tens of tokens make a round milliseconds)."""
    policy = policy or unbounded_door()
    policy.door.wait_rounds, policy.door.peak_rounds = rounds, peak_rounds
    s = make_sched(policy, num_blocks=num_blocks, block_size=4, budget=512,
                   max_seqs=8, max_len=400, host_blocks=host_blocks)
    under_pressure(s)
    door = s.policy.door
    door.mean_output.add(4)
    door.mean_new_input.add(8)
    s.agents.ctx.eta.add_program(3)
    return s


def waiting_ids(s):
    return sorted(r.request_id for r in s.waiting)


def running_ids(s):
    return sorted(r.request_id for r in s.running)


@pytest.mark.parametrize("prompt,admitted", [(304, True), (305, False)])
def test_new_program_is_held_exactly_when_its_working_set_would_not_fit(prompt, admitted):
    s = door_sched()
    s.add_request(areq("a1", 40, 0.0, "a", max_tokens=4))
    step(s, 0.0)                        # nothing active: a is admitted whatever its size
    door = s.policy.door
    # a: 40 prompt + 4 expected output = 44 tokens this turn, + 12 growth x R(1) = 2 turns left
    assert door.request_footprint(s.requests["a1"]) == 44 + 24
    s.add_request(areq("b1", list(range(1000, 1000 + prompt)), 1.0, "b", max_tokens=4))
    step(s, 1.0)
    # W = blocks(68) = 17; b needs blocks(prompt + 4 + 24); 17 + 83 = 100 blocks is the target
    assert door.last_working_set == 17
    assert door.request_footprint(s.requests["b1"]) == prompt + 28
    assert ("b1" in running_ids(s)) is admitted
    assert ("b1" in waiting_ids(s)) is not admitted
    assert door.num_held == (0 if admitted else 1)
    assert s.stats.num_preemptions == 0


@pytest.mark.parametrize("prompt,admitted", [(320, True), (321, False)])
def test_a_turn_admitted_earlier_in_the_step_counts_once_in_the_working_set(prompt, admitted):
    """a's next turn is admitted just before newcomer b reaches the door in the same step: it
    is in the running queue and not yet off the waiting one, and counts once (it used to count
    twice, holding b for memory nobody needed)."""
    s = door_sched()
    s.add_request(areq("a1", 40, 0.0, "a", max_tokens=4))
    for t in (0.0, 1.0, 2.0, 3.0):                  # a's first turn: 40 + 4 tokens, then its tool
        step(s, t)
    s.add_request(areq("a2", list(range(44)) + list(range(500, 508)), 3.9, "a", max_tokens=4))
    s.add_request(areq("b1", list(range(1000, 1000 + prompt)), 4.0, "b", max_tokens=4))
    out, _ = step(s, 4.0)
    door = s.policy.door
    # a2: 52 + 4 tokens (14 blocks), + growth 8 (own 4 per turn shrunk to 12: (4 + 12) / 2) x
    # R(2) = 1 turn left = 64 tokens, 16 blocks; b1: prompt + 4 tokens now, + 12 a turn for
    # R(1) = 2 turns (3 blocks a turn). W with b1 peaks one turn ahead, a2's last:
    # 16 + blocks(prompt + 4) + 3 <= 100 iff prompt <= 320 (counted twice, a2 would hold b1
    # from 257 on)
    assert door.last_working_set == 16
    assert [x.request.request_id for x in out.scheduled] == (["a2", "b1"] if admitted else ["a2"])
    assert waiting_ids(s) == ([] if admitted else ["b1"])


@pytest.mark.parametrize("old_leaves,w", [(1, 37.5), (3, 42.5)])
def test_projection_peaks_where_the_programs_left_hold_the_most(old_leaves, w):
    """W is the largest sum over the turns ahead, each program at b + g x min(j, r) until it
    leaves (rq turns ahead); never above the sum of the peaks, never below what the programs
    hold now."""
    p = admission.Projection()
    p.add(10, 20, 1, old_leaves)   # an old program: 10 blocks now, 30 from one turn on
    p.add(5, 10, 4, 4)             # a young one: 5 blocks, growing 2.5 a turn for 4 turns
    p.add(3, 0, 0, 0)              # a last turn: 3 blocks, gone after it
    # now: 18; when the old one leaves: 30 + 5 + 2.5 x old_leaves; four turns on: 15
    assert p.peak() == w and p.peak_sum() == 48
    p.add(-10, -20, 1, old_leaves)  # the old one leaves the active set (demoted)
    assert p.peak() == 15 and p.peak_sum() == 18
    p.add(9, 0, 0, 0)              # the programs' sizes now are the most they will hold
    assert p.peak() == 17
    assert admission.Projection().peak() == 0


def test_turns_left_tables_give_the_mean_and_the_quantile_of_the_turns_left():
    table, q_table = admission.turns_left_tables([3, 10, 2, 3], 0.9)
    assert table[1] == 18 / 4 - 1 and q_table[1] == 9          # N - 1 of {1, 2, 2, 9}: P90 = 9
    assert table[3] == 16 / 3 - 3 and q_table[3] == 7          # N >= 3: {3, 3, 10}
    assert table[4] == q_table[4] == 6 and table[10] == q_table[10] == 0
    assert len(table) == len(q_table) == 12
    # the quantile is never under the mean: {0, 0, 0, 0, 30}, P50 0, mean 6
    assert admission.turns_left_tables([1, 1, 1, 1, 31], 0.5)[1][1] == 6
    assert admission.turns_left_tables([], 0.9) == ([], [])


@pytest.mark.parametrize("prompt,admitted", [(196, True), (197, False)])
def test_a_newcomer_fits_beside_a_program_that_ends_before_it_grows(prompt, admitted):
    """a's last turn holds 50 blocks and frees them when it ends; newcomer b starts small and
    grows for two more turns. The door admits b while both fit now and b fits alone at its
    peak (a's KV is gone by then); the sum of their peaks would have held b from 173 tokens."""
    s = door_sched()
    s.add_request(areq("a1", 196, 0.0, "a", max_tokens=4, last=True))
    step(s, 0.0)
    s.add_request(areq("b1", list(range(1000, 1000 + prompt)), 0.5, "b", max_tokens=4))
    step(s, 0.5)
    door = s.policy.door
    assert door.last_working_set == 50                 # a: 196 + 4 expected output tokens
    # b: blocks(prompt + 4) now (50 at 196, 51 at 197), + 12 tokens a turn for R(1) = 2 turns
    assert door.request_footprint(s.requests["b1"]) == prompt + 28
    # W with b = max(50 + blocks(prompt + 4), blocks(prompt + 28)) <= 100 iff prompt <= 196
    assert ("b1" in running_ids(s)) is admitted
    assert door.num_held == int(not admitted)
    run_until_idle(s, 1.0)
    assert s.stats.num_preemptions == 0 and s.kv.pool.num_free_blocks == s.kv.pool.num_blocks


def test_door_is_fifo_and_never_holds_turns_of_active_programs():
    s = door_sched()
    s.add_request(areq("a1", 40, 0.0, "a", max_tokens=4))
    step(s, 0.0)
    # b: 87 blocks at the end of its turn, 93 at its peak two turns on: too big while a is
    # active, even with a's last turn alone (14 blocks); c: one turn of 3 blocks, would fit
    s.add_request(areq("b1", list(range(1000, 1344)), 0.5, "b", max_tokens=4))
    s.add_request(areq("c1", list(range(2000, 2008)), 0.6, "c", max_tokens=4, last=True))
    for t in (1.0, 2.0, 3.0):           # a decodes its 4 tokens and goes to its tool
        step(s, t)
    assert waiting_ids(s) == ["b1", "c1"] and not s.running      # c waits behind b at the door
    a = s.agents.programs.get("a")
    assert a.turns_finished == 1 and a.admitted
    # a's next turn passes the door although b and c are held
    s.add_request(areq("a2", list(range(44)) + list(range(500, 508)), 4.0, "a", max_tokens=4, last=True))
    out, _ = step(s, 4.0)
    assert [x.request.request_id for x in out.scheduled] == ["a2"]
    assert waiting_ids(s) == ["b1", "c1"]
    assert out.scheduled[0].start == 40                   # and hits its cached prefix
    assert (s.policy.door.num_returns, s.policy.door.num_faults) == (1, 0)
    for t in (5.0, 6.0, 7.0):
        step(s, t)
    assert "a" not in [r.program_id for r in s.running + s.waiting]
    # a ended: nothing is active, b enters first, then c (93 blocks at b's peak, 87 + 3 now)
    out, _ = step(s, 8.0)
    assert [x.request.request_id for x in out.scheduled] == ["b1", "c1"]
    run_until_idle(s, 9.0)
    assert s.kv.pool.num_free_blocks == s.kv.pool.num_blocks


@pytest.mark.parametrize("inferred", [True, False])
def test_an_answered_turn_of_an_inferred_program_keeps_it_admitted(inferred):
    """A program recognised from the traffic (no id sent) whose turn ends without a tool call
    may still go on: the recogniser attaches a person's answer to it. That answer is a turn of
    an admitted program, as with an explicit id, so the door does not hold it; an explicit id
    whose turn ends without a tool call ended its program, and a later request under it is a
    newcomer."""
    s = door_sched()
    s.add_request(areq("a1", 40, 0.0, "a", max_tokens=4, tool=None))
    s.requests["a1"].agent.inferred = inferred
    s.add_request(areq("x1", list(range(600, 640)), 0.0, "x", max_tokens=4))   # in a tool call next
    for t in (0.0, 1.0, 2.0, 3.0):
        step(s, t)
    assert not s.running and s.agents.programs.get("a").admitted is inferred
    s.add_request(areq("b1", list(range(1000, 1340)), 4.0, "b", max_tokens=4))
    step(s, 4.0)
    assert waiting_ids(s) == ["b1"]          # x reserves its context + growth: b does not fit
    s.add_request(areq("a2", list(range(44)) + list(range(500, 508)), 5.0, "a", max_tokens=4, tool=None))
    s.requests["a2"].agent.inferred = inferred
    out, _ = step(s, 5.0)
    assert [x.request.request_id for x in out.scheduled] == (["a2"] if inferred else [])
    assert waiting_ids(s) == (["b1"] if inferred else ["a2", "b1"])


def test_no_wedge_when_one_program_exceeds_what_admission_allows():
    # 20 blocks of 4 tokens; cold statistics: growth 256 tokens a turn, far over the target
    s = under_pressure(make_sched(unbounded_door(), num_blocks=20, block_size=4, budget=64,
                                  max_seqs=4, max_len=80))
    s.add_request(areq("a1", 60, 0.0, "a", max_tokens=4))
    s.add_request(areq("b1", list(range(100, 108)), 0.1, "b", max_tokens=2, last=True))
    door = s.policy.door
    step(s, 0.0)
    assert running_ids(s) == ["a1"]
    assert door.request_footprint(s.requests["a1"]) > 20 * 4            # bigger than the pool
    now = 0.0
    while s.requests.get("a1") is not None:
        now += 1.0
        step(s, now)
    assert waiting_ids(s) == ["b1"]             # a is in its tool call and still reserves
    s.add_request(areq("a2", list(range(64)) + [7, 7], now + 1.0, "a", max_tokens=2, last=True))
    run_until_idle(s, now + 1.0)
    assert s.stats.num_finished == 3
    s.check_integrity()
    assert s.kv.pool.num_free_blocks == s.kv.pool.num_blocks


def _between_scenario(policy=None, host_blocks=0):
    """a finishes turn 1 with a tool call at t=3; b (200 tokens) waits at the door."""
    s = door_sched(policy, host_blocks=host_blocks)
    s.add_request(areq("a1", 40, 0.0, "a", max_tokens=4))
    for t in (0.0, 1.0, 2.0, 3.0):
        step(s, t)
    assert s.agents.programs.get("a").last_finish_time == 3.0
    # a between turns: 44 tokens; its own growth so far is 4 a turn (its output), shrunk
    # towards the global 12: (4 + 12) / 2 = 8; it reserves 44 + 8 = 52 tokens (13 blocks) for
    # its next turn and 60 (15 blocks) at its peak, R(2) = 1 turn on. b: 51 blocks now (204
    # tokens), + 3 a turn for R(1) = 2 turns. W with b peaks one turn ahead: 15 + 54 = 69 >
    # 68 blocks (a target of 0.68): b waits while a reserves, and fits alone (57)
    s.policy.door.target = 0.68
    s.add_request(areq("b1", list(range(1000, 1200)), 3.5, "b", max_tokens=4))
    return s


@pytest.mark.parametrize("new_input,demoted", [(288, False), (290, True)])
def test_an_engaged_door_demotes_the_latest_program_in_a_tool_call_when_w_exceeds_demote(new_input, demoted):
    """a (first arrival 0) and b (0.5) both finish a turn and go to their tools, reserving;
    the mean new input then grows so that their peaks exceed DEMOTE x the target. At the next
    door decision b, the later program, leaves the active set (W back under the target) and its
    next turn waits at the door as a newcomer; a keeps its place."""
    assert DEMOTE == 1.0                        # the threshold below: 100 of 100 blocks
    s = door_sched()
    s.add_request(areq("a1", 40, 0.0, "a", max_tokens=4))
    s.add_request(areq("b1", list(range(100, 140)), 0.5, "b", max_tokens=4))
    for t in (0.0, 1.0, 2.0, 3.0, 4.0):
        step(s, t)
    door = s.policy.door
    assert set(door.between) == {"a", "b"} and not s.running and not s.agents.pins
    door.mean_new_input.add(new_input)          # growth g = (8 + new_input) / 2 + 4
    # each reserves 44 + (4 + g) / 2 x (1 + R(2) = 1) = 48 + g tokens: 200 (50 blocks, W = 100,
    # not above 1.0 x 100) or 201 (51 blocks, W = 102)
    # newcomer c (200 tokens, 51 blocks now) fits beside neither W
    s.add_request(areq("c1", list(range(300, 500)), 4.2, "c", max_tokens=4))
    step(s, 4.5)
    b = s.agents.programs.get("b")
    assert door.num_demoted == int(demoted) and (b.admitted, b.held) == (not demoted, demoted)
    assert door.last_working_set == (51 if demoted else 100)
    assert set(door.between) == ({"a"} if demoted else {"a", "b"})
    assert s.agents.programs.get("a").admitted and waiting_ids(s) == ["c1"]
    s.add_request(areq("b2", list(range(100, 144)) + list(range(500, 508)), 4.6, "b", max_tokens=4))
    out, _ = step(s, 4.7)                       # b's next turn: held behind c if b was demoted
    assert [x.request.request_id for x in out.scheduled] == ([] if demoted else ["b2"])


def test_program_in_a_tool_call_reserves_until_its_horizon():
    s = _between_scenario()
    step(s, 4.0)
    assert waiting_ids(s) == ["b1"] and s.policy.door.last_working_set == 15
    step(s, 3.0 + COLD_HORIZON_S)               # no durations seen yet: ln(10) s, the prior's P90
    assert waiting_ids(s) == ["b1"]
    step(s, 3.0 + COLD_HORIZON_S + 0.01)        # a's call is now a long one: it stops reserving
    assert running_ids(s) == ["b1"] and s.policy.door.last_working_set == 0


def test_pinned_program_reserves_until_its_pin_expires():
    s = _between_scenario(PinnedPlus())
    assert "a" in s.agents.pins
    step(s, 3.0 + COLD_HORIZON_S + 1.0)         # past the horizon, but pinned
    assert waiting_ids(s) == ["b1"]
    step(s, 103.0)                               # pin expired (a has nothing waiting): released
    assert running_ids(s) == ["b1"] and "a" not in s.agents.pins


def test_with_a_host_tier_unpinned_programs_between_turns_do_not_reserve():
    s = _between_scenario(host_blocks=32)
    step(s, 4.0)
    assert running_ids(s) == ["b1"]


@pytest.mark.parametrize("host_blocks,held", [(0, True), (18, True), (19, False)])
def test_with_a_host_tier_the_door_gates_on_the_device_and_host_horizon(host_blocks, held):
    """The device's H is 0.5 s and blocks are taken at 10 per second: a host tier of B blocks
    keeps an evicted block B / 10 s longer (a reload away, not a recompute). 18 blocks: 2.3 s,
    below the gate (ln 10 = 2.303 s), the door engages and holds b (as in the first test); 19
    blocks: 2.4 s, above it, so the door never engaged and b enters."""
    s = door_sched(host_blocks=host_blocks)
    s.agents.ctx.eviction = Horizon(0.5, rate=10.0)
    assert 0.5 + 1.8 < GATE_S < 0.5 + 1.9
    s.add_request(areq("a1", 40, 0.0, "a", max_tokens=4))
    step(s, 0.0)
    s.add_request(areq("b1", list(range(1000, 1305)), 1.0, "b", max_tokens=4))   # 17 + 84 > 100
    step(s, 1.0)
    door = s.policy.door
    assert door.engaged is held and (waiting_ids(s) == ["b1"]) is held and door.num_held == int(held)
    run_until_idle(s, 2.0)
    assert s.kv.pool.num_free_blocks == s.kv.pool.num_blocks


def test_order_is_request_fcfs_with_pinned_programs_first():
    s = make_sched(PinnedPlus(), num_blocks=64)
    s.add_request(areq("old-1", 4, 0.0, "old", max_tokens=1))
    step(s, 0.0)                                   # old-1 finishes into a pin
    assert "old" in s.agents.pins
    for r in (areq("old-2", list(range(10, 14)), 120.0, "old"), areq("new-1", list(range(20, 24)), 100.0, "new"),
              areq("new-2", list(range(30, 34)), 110.0, "new2")):
        s.add_request(r)
    assert [r.request_id for r in sorted(s.waiting, key=s.policy.waiting_key)] == ["old-2", "new-1", "new-2"]
    s.agents._release("old")                       # without the pin: request arrival order
    assert [r.request_id for r in sorted(s.waiting, key=s.policy.waiting_key)] == ["new-1", "new-2", "old-2"]
    # victims: the latest request arrival (vLLM's order), whatever its program's age
    reqs = sorted(s.waiting, key=s.policy.victim_key)
    assert [r.request_id for r in reqs] == ["new-1", "new-2", "old-2"]


def test_preempted_newcomer_stays_active():
    """A program whose first turn was admitted is active: preempted, it is not held again."""
    s = door_sched(num_blocks=30)
    s.add_request(areq("a1", 40, 0.0, "a", max_tokens=40))
    step(s, 0.0)
    s.requests["a1"].status = RequestStatus.RUNNING
    s._preempt(s.requests["a1"], 0.5)
    assert s.agents.programs.get("a").admitted
    assert s.policy.admit(s.requests["a1"], 1.0)
    run_until_idle(s, 1.0)
    assert s.kv.pool.num_free_blocks == s.kv.pool.num_blocks


def test_config_and_stats():
    from continuum.config import SchedulerConfig
    from continuum.errors import ConfigError
    from continuum.scheduler.policy import make_policy
    p = make_policy("continuum+", SchedulerConfig.from_kwargs(admission_target=1.5, door_max_wait=5.0))
    assert p.door.target == 1.5 and p.door.max_wait == 5.0
    with pytest.raises(ConfigError, match="admission_target"):
        SchedulerConfig.from_kwargs(admission_target=0.0)
    with pytest.raises(ConfigError, match="door_max_wait"):
        SchedulerConfig(policy_options={"door_max_wait": 0.0})
    s = door_sched()
    assert s.policy.snapshot() == {"admission_held_steps_total": 0, "admission_working_set_blocks": 0,
                                "admission_faults_total": 0, "admission_returns_total": 0,
                                "admission_timeouts_total": 0, "admission_demoted_total": 0,
                                "admission_door_engaged": 0.0, "kv_eviction_horizon_seconds": 0.5}


def test_door_avoids_the_overcommit_that_other_policies_resolve_by_preemption():
    # test_scheduler's preemption scenario: 4 blocks of 4 tokens, two requests of 6 prompt
    # tokens and 6 outputs each (3 blocks each at their end); under vllm b is preempted
    from continuum.request import Request
    from continuum.sampling_params import SamplingParams
    s = under_pressure(make_sched(unbounded_door(), num_blocks=4, block_size=4, budget=64, max_len=16))
    for rid, t, base in (("a", 0.0, 0), ("b", 1.0, 100)):
        s.add_request(Request(rid, list(range(base, base + 6)), SamplingParams(max_tokens=6, ignore_eos=True), t))
    out, _ = step(s, 2.0)
    assert [x.request.request_id for x in out.scheduled] == ["a"] and waiting_ids(s) == ["b"]
    run_until_idle(s, 3.0)
    assert s.stats.num_preemptions == 0 and s.stats.num_finished == 2


def test_a_returning_turn_whose_context_was_evicted_counts_as_a_fault():
    s = make_sched(ContinuumPlusPolicy(ContinuumPlusConfig(admission_target=100.0)), num_blocks=16, block_size=4, budget=64,
                   max_len=64)
    s.add_request(areq("a1", 40, 0.0, "a", max_tokens=4))
    for t in (0.0, 1.0, 2.0, 3.0):
        step(s, t)                                # a's 10 full computed blocks stay cached
    s.add_request(areq("b1", list(range(100, 156)), 3.5, "b", max_tokens=1, last=True))
    step(s, 4.0)                                  # b's 14 blocks evict a's context
    s.add_request(areq("a2", list(range(44)) + [9] * 8, 5.0, "a", max_tokens=2, last=True))
    out, _ = step(s, 5.0)
    assert out.scheduled[0].start < 40
    assert (s.policy.door.num_returns, s.policy.door.num_faults) == (1, 1)
    run_until_idle(s, 6.0)


# -- the gate, the bounds, the duty-cycle rule -------------------------------------------------
def _held_scenario(horizon_s: float, max_wait: float = 600.0):
    """a (active, 68-token footprint = 17 blocks) runs; b's 305-token prompt would overflow
    the 100 blocks: the door holds b whenever it is engaged."""
    s = door_sched(ContinuumPlusPolicy(ContinuumPlusConfig(door_max_wait=max_wait)))
    s.agents.ctx.eviction = Horizon(horizon_s)
    s.add_request(areq("a1", 40, 0.0, "a", max_tokens=40))
    step(s, 0.0)
    s.add_request(areq("b1", list(range(1000, 1305)), 1.0, "b", max_tokens=4))
    return s


def test_door_holds_only_under_pressure_with_hysteresis():
    s = _held_scenario(math.inf)               # the cache keeps everything: the door stays open
    step(s, 1.0)
    assert "b1" in running_ids(s) and not s.policy.door.engaged
    s = _held_scenario(GATE_S - 0.01)          # a block freed now is gone within the gate: held
    step(s, 1.0)
    assert waiting_ids(s) == ["b1"] and s.policy.door.engaged
    s.agents.ctx.eviction.seconds = DISENGAGE * GATE_S      # between the thresholds: still held
    step(s, 2.0)
    assert waiting_ids(s) == ["b1"] and s.policy.door.engaged
    s.agents.ctx.eviction.seconds = DISENGAGE * GATE_S + 0.01   # pressure gone: b enters
    step(s, 3.0)
    assert "b1" in running_ids(s) and not s.policy.door.engaged
    assert s.policy.door.num_held == 2


def test_a_chat_sized_newcomer_waits_at_the_door_at_most_a_minute():
    s = _held_scenario(0.1, max_wait=600.0)
    bound = SMALL_WAIT_S                        # b's prompt: 305 tokens
    assert s.policy.door.wait_bound(s.requests["b1"]) == bound == 60.0
    step(s, 1.0 + bound - 1e-6)                 # b arrived at 1.0: held until 1.0 + bound
    assert waiting_ids(s) == ["b1"] and s.policy.door.num_timeouts == 0
    step(s, 1.0 + bound)
    assert "b1" in running_ids(s) and s.policy.door.num_timeouts == 1
    run_until_idle(s, 1.0 + bound + 1.0)
    assert s.kv.pool.num_free_blocks == s.kv.pool.num_blocks


def test_only_chat_sized_prompts_get_the_short_bound():
    door = door_sched(ContinuumPlusPolicy()).policy.door          # rounds out of reach
    for n, bound in ((SMALL_PROMPT_TOKENS + 1, 180.0), (8000, 180.0), (SMALL_PROMPT_TOKENS, 60.0), (1, 60.0)):
        assert door.wait_bound(areq("x", n, 0.0, "x")) == bound
    short = door_sched(ContinuumPlusPolicy(ContinuumPlusConfig(door_max_wait=10.0))).policy.door
    assert short.wait_bound(areq("x", 100, 0.0, "x")) == short.wait_bound(areq("y", 9000, 0.0, "y")) == 10.0


def test_a_newcomer_waits_at_most_wait_rounds_rounds_of_the_programs_in_the_system():
    """V = the reload of every program's context + the decode steps of one turn of each,
    a full cache at a time; a held newcomer is admitted exactly WAIT_ROUNDS x V (2.5 V) after
    its arrival (module docstring, "the wait bound"). Both programs are in their last turns:
    their peaks are their sizes, and the round at the peaks (PEAK_ROUNDS of the same V) is
    shorter."""
    assert (WAIT_ROUNDS, PEAK_ROUNDS) == (2.5, 1.25)
    s = door_sched(ContinuumPlusPolicy(ContinuumPlusConfig(admission_target=0.9, door_max_wait=600.0)),
                   rounds=WAIT_ROUNDS, peak_rounds=PEAK_ROUNDS)
    s.set_reload_cost(prefill=PrefillCost(a=0.0, b=0.01, c=1.0, d0=0.5, d1=0.0, d2=0.0))
    s.agents.ctx.eviction = Horizon(0.1)                           # under pressure: engaged
    s.add_request(areq("a1", 40, 0.0, "a", max_tokens=40, last=True))       # last turns: both end
    step(s, 0.0)
    s.add_request(areq("b1", list(range(1000, 1320)), 1.0, "b", max_tokens=4, last=True))
    door = s.policy.door
    assert door.mean_output.value == 4
    # b (324 tokens = 81 blocks) does not fit the target's 90 beside a's 11: held (the cache's
    # 100 would hold both). In the system: a (40 tokens) and b (320): reloads 0.01 n + 1 s =
    # 1.4 + 4.2 s. Decode: a turn of 4 tokens holds n + 2 tokens for 4 steps: 4 x (360 + 4) /
    # 400 tokens of cache = 3.64 full steps of 0.5 s.
    t = s.agents.programs
    assert (t.num_in_system, t.sum_tokens, t.peak_tokens) == (2, 360, 360)
    assert door.round_seconds(t.sum_tokens, t.sum_price) == pytest.approx(1.4 + 4.2 + 0.5 * 3.64)
    bound = WAIT_ROUNDS * (1.4 + 4.2 + 0.5 * 3.64)                 # 18.55 s, under the 60 s cap
    assert door.wait_bound(s.requests["b1"]) == pytest.approx(bound)
    step(s, 1.0 + bound - 1e-6)
    assert waiting_ids(s) == ["b1"] and door.num_timeouts == 0
    step(s, 1.0 + bound + 1e-9)
    assert "b1" in running_ids(s) and door.num_timeouts == 1
    run_until_idle(s, 1.0 + bound + 1.0)
    assert s.kv.pool.num_free_blocks == s.kv.pool.num_blocks
    assert s.agents.programs.num_in_system == 0                   # both ended: V is 0 again


def test_a_young_program_holds_the_door_for_the_rounds_at_its_projected_peak():
    """A program's peak is its size grown by its growth per turn over its expected turns left;
    the bound is the longer of WAIT_ROUNDS rounds now and PEAK_ROUNDS rounds at the peaks
    (module docstring, "the wait bound"). ``peak_rounds`` is moved to 4 so that, on these
    tests' small contexts, the round at the peaks is the one that binds."""
    s = door_sched(ContinuumPlusPolicy(ContinuumPlusConfig(admission_target=0.9, door_max_wait=600.0)),
                   rounds=WAIT_ROUNDS, peak_rounds=4.0)
    s.set_reload_cost(prefill=PrefillCost(a=0.0, b=0.01, c=1.0, d0=0.5, d1=0.0, d2=0.0))
    s.agents.ctx.eviction = Horizon(0.1)
    s.add_request(areq("a1", 40, 0.0, "a", max_tokens=40, last=True))       # a ends this turn
    step(s, 0.0)
    s.add_request(areq("b1", list(range(1000, 1320)), 1.0, "b", max_tokens=4))   # b goes on
    door, t = s.policy.door, s.agents.programs
    # a's peak is its 40 tokens (last turn); b's 320 + growth 12 x R(1) = 2 turns left = 344.
    assert (t.get("a").peak, t.get("b").peak) == (40, 344)
    assert (t.sum_tokens, t.peak_tokens) == (360, 384)
    assert t.peak_price == pytest.approx(1.4 + 4.44)
    now_round = 1.4 + 4.2 + 0.5 * 4 * (360 + 4) / 400              # 7.42 s
    peak_round = 1.4 + 4.44 + 0.5 * 4 * (384 + 4) / 400            # 7.78 s
    assert door.round_seconds(t.peak_tokens, t.peak_price) == pytest.approx(peak_round)
    bound = 4.0 * peak_round                                       # 31.12 s > 2.5 x 7.42 s
    assert bound > WAIT_ROUNDS * now_round
    assert door.wait_bound(s.requests["b1"]) == pytest.approx(bound)
    step(s, 1.0 + bound - 1e-6)
    assert waiting_ids(s) == ["b1"] and door.num_timeouts == 0
    step(s, 1.0 + bound + 1e-9)
    assert "b1" in running_ids(s) and door.num_timeouts == 1
    s.finish_requests(["a1", "b1"], RequestStatus.FINISHED_ABORTED, 1.0 + bound + 1.0)
    s.check_integrity()
    assert (t.num_in_system, t.sum_tokens, t.peak_tokens, t.peak_price) == (0, 0, 0, 0.0)
    assert s.kv.pool.num_free_blocks == s.kv.pool.num_blocks


def _human_program(s, think_s: float):
    """Teach the predictor that ``human`` takes ``think_s`` (100 samples: past cold start), then
    run a's first turn (1 s of service) into a call of it."""
    for _ in range(100):
        s.agents.ctx.predictor.observe("human", think_s)
    s.add_request(areq("a1", 200, 0.0, "a", max_tokens=4, tool="human"))
    for t in (0.0, 0.25, 0.5, 1.0):
        step(s, t)
    assert s.agents.programs.get("a").last_finish_time == 1.0


def test_a_person_thinking_for_ten_minutes_never_holds_the_door():
    s = door_sched()
    _human_program(s, 600.0)                    # P90 600 s > DUTY x 1 s of service
    assert 600.0 > DUTY * 1.0
    assert "a" not in s.agents.pins             # never pinned
    assert not s.agents.programs.get("a").kept
    # b (305 tokens: 77 blocks) would not fit beside a's reservation (51 + growth blocks), and
    # the door is engaged; a reserves nothing, so b enters at once
    s.add_request(areq("b1", list(range(1000, 1305)), 2.0, "b", max_tokens=4))
    step(s, 2.0)
    assert "b1" in running_ids(s) and s.policy.door.last_working_set == 0
    assert s.policy.door.engaged


def test_an_agent_with_short_tools_reserves_and_holds_the_door():
    s = door_sched()
    _human_program(s, 2.0)                      # a 2 s tool: kept (P90 2 s < DUTY x 1 s)
    s.add_request(areq("b1", list(range(1000, 1305)), 2.0, "b", max_tokens=4))
    step(s, 2.0)
    assert waiting_ids(s) == ["b1"] and s.policy.door.last_working_set > 0
    step(s, 3.01)                               # past a's horizon (1.0 + 2 s): b enters
    assert "b1" in running_ids(s)


# -- continuum+'s pins -----------------------------------------------------------------------
def _ttl_sched(horizon_s: float):
    """100 blocks of 4 tokens, 8 sequences; tool ``ls`` durations {1, 2, 3, 10} s x 25 (past
    cold start); a reload costs 2 s; T = 0, eta = 1."""
    from continuum.kv_ttl.reload_cost import PrefillCost
    s = door_sched()
    s.agents.ctx.eviction = Horizon(horizon_s)
    s.set_reload_cost(prefill=PrefillCost(0.0, 0.0, 2.0))
    for d in (1.0, 2.0, 3.0, 10.0) * 25:
        s.agents.ctx.predictor.observe("ls", d)
    return s


@pytest.mark.parametrize("horizon_s,ttl", [(0.0, 3.0), (2.5, 3.0), (3.0, 0.0), (math.inf, 0.0)])
def test_pins_are_priced_by_memory_share_and_skip_calls_the_cache_survives(horizon_s, ttl):
    s = _ttl_sched(horizon_s)
    # 40 tokens = 10 of 100 blocks, but at least one of 8 batch slots: price 1/8, so the 2 s
    # reload is worth 16 s of holding: 0.25*16-1 = 3, 0.5*16-2 = 6, 0.75*16-3 = 9, 16-10 = 6.
    # Calls shorter than the eviction horizon find their KV anyway: at 2.5 s only the 3 s and
    # 10 s calls count (0.25*16-3 = 1 > 0.5*16-10), at 3 s only the 10 s one (0.25*16-10 < 0)
    assert s.policy.choose_ttl("ls", 40) == ttl
    # the paper's price (one second per second) would not pin at all: 0.25*2-1 < 0, ...
    from continuum.kv_ttl.ttl import solve_ttl
    assert solve_ttl(s.agents.ctx.predictor.samples("ls"), 2.0) == 0.0


# -- the reservation horizon counts the calls still in flight (censoring) --------------------

@pytest.mark.parametrize("seed", range(5))
def test_km_quantile_without_calls_in_flight_is_the_empirical_quantile(seed):
    rng = random.Random(seed)
    for n in range(1, 60):
        xs = sorted(rng.expovariate(1.0) for _ in range(n))
        for q in (0.5, 0.9, 0.99):
            assert km_quantile(xs, [], q) == xs[min(int(q * n), n - 1)]


def test_km_quantile_with_censored_calls():
    # events 1, 2, 3 and a call still in flight at 2.5: S = 3/4, 1/2, (drop 2.5), 0
    assert km_quantile([1.0, 2.0, 3.0], [2.5], 0.5) == 3.0
    assert km_quantile([1.0, 2.0, 3.0], [], 0.5) == 2.0
    # most calls outlast every return seen: the quantile is unknown
    assert km_quantile([5.0] * 4, [97.0] * 3, 0.9) == math.inf


def _person_paced(in_flight: int):
    """``in_flight`` programs finished a turn calling "think" at t=0 and have not come back;
    four "think" calls returned after 5 s. Program q finishes a 1-token turn at t=100."""
    s = door_sched()
    for i in range(in_flight):
        s.add_request(areq(f"p{i}-1", list(range(100 * i, 100 * i + 8)), 0.0, f"p{i}", tool="think",
                           max_tokens=1))
    step(s, 0.0)
    for _ in range(4):
        s.agents.ctx.predictor.observe("think", 5.0)
    s.add_request(areq("q-1", list(range(900, 908)), 100.0, "q", tool="think", max_tokens=1))
    step(s, 100.0)
    return s


def test_calls_in_flight_that_outlast_the_returns_stop_a_reservation():
    # Returns alone say "think" lasts 5 s, under DUTY x 1 s: q would reserve memory...
    assert _person_paced(0).agents.programs.get("q").kept
    # ...but three calls of it have lasted 100 s and counting: its P90 is unknown, q is not kept
    s = _person_paced(3)
    assert not s.agents.programs.get("q").kept
    assert s.policy.door.between["q"].horizon == 0.0


# -- the backlog ---------------------------------------------------------------------------------
def _backlog_scenario(b_prompt: int):
    """Target 0.5 of 100 blocks (the engaged door's limit: 50 blocks; a disengaged door's limit
    for its backlog: RELEASE x 50 = 75). a's only turn (11 blocks: 40 + 4 expected output)
    runs; b arrives while the door is engaged and needs more than the 39 blocks left: held, it
    is in the backlog. Then the pressure goes (H above the upper threshold)."""
    assert RELEASE == 1.5
    s = door_sched(ContinuumPlusPolicy(ContinuumPlusConfig(admission_target=0.5, door_max_wait=1e9)))
    s.add_request(areq("a1", 40, 0.0, "a", max_tokens=40, last=True))
    step(s, 0.0)
    s.add_request(areq("b1", list(range(1000, 1000 + b_prompt)), 1.0, "b", max_tokens=4))
    step(s, 1.0)
    b = s.agents.programs.get("b")
    assert waiting_ids(s) == ["b1"] and s.policy.door.engaged and b.held and not b.admitted
    s.agents.ctx.eviction.seconds = DISENGAGE * GATE_S + 0.01
    return s


@pytest.mark.parametrize("b_prompt,released", [(228, True), (229, False)])
def test_a_disengaged_door_releases_its_backlog_only_up_to_release_times_the_target(b_prompt, released,
                                                                                    monkeypatch):
    monkeypatch.setattr(admission, "SMALL_PROMPT_TOKENS", 0)     # b and c count as agents here
    s = _backlog_scenario(b_prompt)
    door = s.policy.door
    # b's footprint: prompt + 4 output + 12 growth x R(1) = 2 turns. The release counts the
    # peaks, not their projection (a's only turn ends before b grows: projected, b would fit
    # up to 252 tokens): 11 + blocks(b_prompt + 28) = 11 + 64 = 75 blocks fit
    assert door.request_footprint(s.requests["b1"]) == b_prompt + 28
    s.add_request(areq("c1", list(range(3000, 3008)), 2.0, "c", max_tokens=4))   # never held
    step(s, 2.0)
    assert not door.engaged and door.last_working_set == 11
    if released:
        assert {"b1", "c1"} <= set(running_ids(s))
    else:       # b waits for the working set to shrink, and c, behind it, joins the backlog
        assert waiting_ids(s) == ["b1", "c1"] and s.agents.programs.get("c").held
    run_until_idle(s, 3.0)          # a ends: nothing active (W = 0), the backlog enters
    assert s.kv.pool.num_free_blocks == s.kv.pool.num_blocks


def test_a_newcomer_the_door_never_held_passes_it_disengaged_whatever_its_size():
    s = door_sched(ContinuumPlusPolicy(ContinuumPlusConfig(admission_target=0.5, door_max_wait=1e9)))
    s.agents.ctx.eviction = Horizon(DISENGAGE * GATE_S + 0.01)
    s.add_request(areq("a1", 40, 0.0, "a", max_tokens=40, last=True))
    step(s, 0.0)
    s.add_request(areq("b1", list(range(1000, 1300)), 1.0, "b", max_tokens=4))   # 11 + 76 > 75
    step(s, 1.0)
    assert "b1" in running_ids(s) and not s.policy.door.engaged
    assert not s.agents.programs.get("b").held and s.policy.door.num_held == 0
    run_until_idle(s, 2.0)
    assert s.kv.pool.num_free_blocks == s.kv.pool.num_blocks


def test_a_chat_sized_newcomer_passes_a_disengaged_door_ahead_of_the_backlog():
    s = _backlog_scenario(229)       # b: held while the door was engaged, too big for the release
    s.add_request(areq("c1", list(range(3000, 3008)), 2.0, "c", max_tokens=4))
    assert max(s.requests[r].num_prompt_tokens for r in ("b1", "c1")) <= SMALL_PROMPT_TOKENS
    step(s, 2.0)
    # both chat-sized: a conversation's first message is not what floods memory once the
    # pressure is gone (agents' growing contexts are), so both pass the disengaged door
    assert {"b1", "c1"} <= set(running_ids(s)) and not s.agents.programs.get("c").held
    run_until_idle(s, 3.0)
    assert s.kv.pool.num_free_blocks == s.kv.pool.num_blocks


def test_a_program_that_ended_is_no_longer_part_of_the_backlog():
    """A later request under the id of a program that ended starts a new program: a newcomer
    the door has not held."""
    s = door_sched(ContinuumPlusPolicy(ContinuumPlusConfig(admission_target=0.5, door_max_wait=1e9)))
    s.add_request(areq("a1", 40, 0.0, "a", max_tokens=40, last=True))
    step(s, 0.0)
    s.add_request(areq("b1", list(range(1000, 1160)), 1.0, "b", max_tokens=4, last=True))
    step(s, 1.0)
    b = s.agents.programs.get("b")
    assert waiting_ids(s) == ["b1"] and b.held                  # 11 + 41 blocks > 50
    s.agents.ctx.eviction.seconds = DISENGAGE * GATE_S + 0.01
    step(s, 2.0)                                                # 52 <= 75: released
    assert "b1" in running_ids(s)
    run_until_idle(s, 3.0)
    assert not b.admitted and not b.held
    assert s.kv.pool.num_free_blocks == s.kv.pool.num_blocks


def test_no_bound_in_rounds_before_the_engines_step_cost_fit_and_prices_follow_each_refit():
    """On the engine the prefill model is its online step-cost fit; before the first fit it
    answers with another machine's prior, so the door keeps only its caps (a held newcomer is
    not let in by a round the prior makes milliseconds), and each refit re-reads every price."""
    s = door_sched(ContinuumPlusPolicy(ContinuumPlusConfig(admission_target=0.9, door_max_wait=600.0)),
                   rounds=WAIT_ROUNDS, peak_rounds=PEAK_ROUNDS)
    fit = OnlineStepCost(window=512, refit_every=512)
    model = MeasuredPrefill(fit, 512)
    s.set_reload_cost(prefill=model)
    s.agents.ctx.eviction = Horizon(0.1)
    s.add_request(areq("a1", 40, 0.0, "a", max_tokens=40, last=True))
    step(s, 0.0)
    s.add_request(areq("b1", list(range(1000, 1320)), 1.0, "b", max_tokens=4, last=True))
    door, t = s.policy.door, s.agents.programs
    assert not model.measured and door.rounds_bound() == math.inf
    assert door.wait_bound(s.requests["b1"]) == SMALL_WAIT_S          # 320 tokens: chat-sized cap
    step(s, 1.0 + 30.0)
    assert waiting_ids(s) == ["b1"] and door.num_timeouts == 0        # the prior's 2.5 V is ~0.05 s
    assert t.sum_price == pytest.approx(PrefillCost().seconds(40) + PrefillCost().seconds(320))
    rng = random.Random(2)
    feed(fit, [random_step(rng) for _ in range(512)])                 # the first fit
    assert model.measured and model.version == 1
    step(s, 1.0 + 30.5)                                               # the next step reprices
    assert t.sum_price == pytest.approx(model.seconds(40) + model.seconds(320))
    t.check()
    assert door.rounds_bound() == pytest.approx(WAIT_ROUNDS * door.round_seconds(t.sum_tokens, t.sum_price))
    s.finish_requests(["a1", "b1"], RequestStatus.FINISHED_ABORTED, 32.0)
    s.check_integrity()
    assert (t.num_in_system, t.sum_price, t.peak_price) == (0, 0.0, 0.0)
    assert s.kv.pool.num_free_blocks == s.kv.pool.num_blocks
