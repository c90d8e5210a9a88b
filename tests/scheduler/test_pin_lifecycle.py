"""Pin lifecycle of METHOD 2.1 with a fake executor and an injected clock: exact block ids."""
from continuum.request import RequestStatus
from tests.scheduler.agent_helpers import ConstTTL, areq, make_sched, plan, run_until_idle, step

TURN2 = list(range(10)) + [7, 7] + [50, 51, 52, 53]     # turn 1's prompt + output + tool result


def finish_turn1(s, t=0.0, program="p", **kw):
    """Turn 1 of ``program``: 10 prompt tokens, 2 output tokens, finishing at t + 1."""
    s.add_request(areq("t1", 10, t, program, **kw))
    step(s, t)
    _, done = step(s, t + 1.0)
    assert [r.request_id for r in done] == ["t1"]


def test_finished_turn_pins_its_full_blocks_and_frees_the_partial_tail():
    s = make_sched(ConstTTL(2.0))
    finish_turn1(s)
    pins, kv = s.agents.pins, s.kv
    pin = pins.get("p")
    # 11 computed tokens: blocks 0, 1 full and registered; block 2 (partial) freed at once
    assert pin.block_ids == [0, 1] and pin.created == 1.0 and pin.expires_at == 3.0
    assert [b.ref_cnt for b in kv.pool.blocks[:3]] == [1, 1, 0]
    assert pins.pinned_blocks == 2 and s.stats.pins_made == 1
    assert s.stats.ttl_histogram()["pin_ttl_ms_le_2000"] == 1
    s.check_integrity()


def test_pin_expires_lazily_at_schedule_when_nothing_waits():
    s = make_sched(ConstTTL(2.0))
    finish_turn1(s)
    s.schedule(2.5)
    assert "p" in s.agents.pins
    s.schedule(3.0)                                     # expiry is "<= now"
    assert "p" not in s.agents.pins and s.stats.pins_expired == 1
    assert s.kv.pool.counts() == {"free": 14, "cached": 2, "in_use": 0, "total": 16}
    s.check_integrity()


def test_next_turn_hits_the_pin_takes_its_own_refs_then_the_pin_is_dropped():
    s = make_sched(ConstTTL(2.0))
    finish_turn1(s)
    t2 = areq("t2", TURN2, 2.0, "p")
    s.add_request(t2)
    out, _ = step(s, 2.0)
    assert plan(out) == [("t2", 8, 8, True)]            # blocks 0, 1 hit; 8 tokens to compute
    assert s.kv.get_block_ids(t2)[:2] == [0, 1] and t2.num_cached_tokens == 8
    assert [b.ref_cnt for b in s.kv.pool.blocks[:2]] == [1, 1]   # own refs only
    assert "p" not in s.agents.pins and s.stats.pins_hit == 1 and s.stats.pins_expired == 0
    # the tool's duration was measured server-side: arrival 2.0 - finish 1.0
    assert s.agents.ctx.predictor.samples  # history exists
    assert list(s.agents.ctx.predictor.per_tool["ls"].values) == [1.0]


def test_expired_pin_is_kept_while_its_follow_up_waits():
    s = make_sched(ConstTTL(2.0), max_seqs=1)
    finish_turn1(s)
    s.add_request(areq("q", list(range(100, 104)), 1.5, "q", max_tokens=4))
    step(s, 1.5)                                        # q takes the only seat
    s.add_request(areq("t2", TURN2, 2.0, "p"))
    step(s, 2.0)
    out, _ = step(s, 3.5)                               # TTL ran out at 3.0, t2 still waits
    assert "p" in s.agents.pins and [x.request.request_id for x in out.scheduled] == ["q"]
    step(s, 4.0)                                        # q finishes
    out, _ = step(s, 4.5)
    assert plan(out) == [("t2", 8, 8, True)]
    assert s.stats.pins_hit == 1 and s.stats.pins_expired == 0
    run_until_idle(s, 5.0)


def test_program_end_never_pins():
    s = make_sched(ConstTTL(2.0))
    finish_turn1(s, program="p", last=True)             # is_last_step
    assert len(s.agents.pins) == 0 and s.stats.pins_made == 0
    s2 = make_sched(ConstTTL(2.0))
    finish_turn1(s2, program="p", tool=None)            # no tool call and no output text
    assert len(s2.agents.pins) == 0
    s3 = make_sched(ConstTTL(2.0))
    finish_turn1(s3, program=None)                      # a program of one turn
    assert len(s3.agents.pins) == 0 and len(s3.agents.programs) == 0
    for x in (s, s2, s3):
        assert x.kv.pool.counts()["in_use"] == 0
        x.check_integrity()
    # eta learned from the completed program: one turn contributes no pair
    assert len(s.agents.ctx.eta.programs) == 1


def test_tool_name_parsed_from_the_output_when_the_client_gives_none():
    s = make_sched(ConstTTL(2.0), output_text=lambda r: "I will look.\n```bash\nls -la src\n```")
    finish_turn1(s, tool=None)
    assert "p" in s.agents.pins
    s.add_request(areq("t2", TURN2, 2.5, "p"))
    assert list(s.agents.ctx.predictor.per_tool["ls"].values) == [1.5]


def test_pin_over_budget_is_not_made():
    s = make_sched(ConstTTL(2.0), num_blocks=16, pin_budget_fraction=0.1)   # 1 block
    finish_turn1(s)
    assert len(s.agents.pins) == 0 and s.stats.pins_rejected == 1
    assert s.kv.pool.counts()["in_use"] == 0
    s.check_integrity()


def two_pinned_programs(num_blocks=8):
    """Programs a (arrival 0) and b (arrival 0.5) each pin 2 full blocks: a [0, 1], b [2, 3]."""
    s = make_sched(ConstTTL(10.0), num_blocks=num_blocks, pin_budget_fraction=1.0,
                   max_len=4 * num_blocks)
    s.add_request(areq("a1", list(range(8)), 0.0, "a", max_tokens=1))
    s.add_request(areq("b1", list(range(100, 108)), 0.5, "b", max_tokens=1))
    step(s, 0.5)
    assert s.agents.pins.get("a").block_ids == [0, 1] and s.agents.pins.get("b").block_ids == [2, 3]
    return s


def test_admission_under_pressure_releases_latest_program_arrival_first():
    s = two_pinned_programs()
    c = areq("c", list(range(200, 220)), 2.0)            # needs 5 blocks; 4 are free
    s.add_request(c)
    out, _ = step(s, 2.0)
    assert plan(out) == [("c", 0, 20, True)]
    assert "b" not in s.agents.pins and "a" in s.agents.pins
    assert s.stats.pins_force_released == 1
    # b's blocks joined the free queue tail first (3, then 2); c took 4..7 then 3
    assert s.kv.get_block_ids(c) == [4, 5, 6, 7, 3]
    run_until_idle(s, 3.0)


def test_decode_growth_releases_pins_before_preempting():
    s = two_pinned_programs()
    c = areq("c", list(range(200, 216)), 1.0, max_tokens=3)   # exactly the 4 free blocks
    s.add_request(c)
    step(s, 1.0)
    out, _ = step(s, 1.1)                               # token 17 needs a 5th block
    assert out.preempted_ids == [] and plan(out) == [("c", 16, 1, True)]
    assert s.kv.get_block_ids(c) == [4, 5, 6, 7, 3] and s.stats.pins_force_released == 1
    assert s.stats.num_preemptions == 0
    run_until_idle(s, 2.0)


def test_a_request_that_cannot_fit_waits_without_error_or_deadlock():
    s = two_pinned_programs(num_blocks=6)
    big = areq("big", list(range(300, 317)), 1.0, max_tokens=40)   # 5 blocks now, 6 at the end
    s.add_request(big)
    out, _ = step(s, 1.0)
    assert len(s.agents.pins) == 0 and s.stats.pins_force_released == 2
    assert [x.request.request_id for x in out.scheduled] == ["big"]
    small = areq("small", list(range(400, 405)), 1.5, max_tokens=2)
    s.add_request(small)
    for i in range(60):
        step(s, 2.0 + i)
    assert big.status == RequestStatus.FINISHED_LENGTH and small.is_finished
    s.check_integrity()
    assert s.kv.pool.counts()["in_use"] == 0


def test_own_pin_is_released_last_when_the_new_prompt_diverged():
    # The follow-up does not share the pinned prefix and only fits without the pin: keeping
    # the pin (its follow-up waits, so expiry would keep it too) would wedge an idle engine.
    s = make_sched(ConstTTL(10.0), num_blocks=4, pin_budget_fraction=1.0, max_len=16)
    s.add_request(areq("p1", list(range(8)), 0.0, "p", max_tokens=1))
    step(s, 0.0)
    assert s.agents.pins.get("p").block_ids == [0, 1]
    s.add_request(areq("p2", list(range(100, 113)), 1.0, "p", last=True, max_tokens=1))
    out, _ = step(s, 20.0)
    assert plan(out) == [("p2", 0, 13, True)]
    assert s.stats.pins_force_released == 1 and s.stats.pins_hit == 0
    s.check_integrity()
    assert s.kv.pool.counts()["in_use"] == 0
