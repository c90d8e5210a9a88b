"""Program records (bounded memory) and the pin table (budget, victim order)."""
import math

import pytest

from continuum.kv_ttl.pins import PinTable
from continuum.kv_ttl.programs import ProgramTable
from tests.scheduler.agent_helpers import areq


def req(pid: str, t: float):
    return areq(f"{pid}@{t}", [1, 2], t, pid)


def test_idle_programs_are_forgotten_live_and_pinned_ones_kept():
    t = ProgramTable(idle_timeout=10.0)
    ra, rb, rc = req("a", 0.0), req("b", 1.0), req("c", 2.0)
    a, b, c = (t.on_arrival(r, r.arrival_time) for r in (ra, rb, rc))
    for rec, r in ((a, ra), (c, rc)):
        t.on_finish(rec, r)
    for rec in (a, b, c):
        rec.num_waiting = 0
    c.pinned = True                           # b still has a request in the system
    assert t.gc(9.0) == 0 and len(t) == 3
    assert t.gc(11.5) == 1 and "a" not in t and "b" in t and "c" in t
    t.on_finish(b, rb)
    c.pinned = False
    # b was touched at 11.5 when found live: idle again only 10 s later; c was not reached
    assert t.gc(21.0) == 1 and "c" not in t and "b" in t
    assert t.gc(21.6) == 1 and len(t) == 0 and t.num_forgotten == 3


def test_program_record_keeps_first_arrival_and_counts_turns():
    t = ProgramTable()
    r = t.on_arrival(req("p", 3.0), 3.0, step=1)
    r2 = t.on_arrival(req("p", 8.0), 8.0, step=4)
    assert r is r2 and r.first_arrival == 3.0 and r.turns_arrived == 2 and r.num_waiting == 2
    assert r.wait_steps(6) == 5 + 2                        # open intervals since steps 1 and 4
    r.stop_waiting(6)
    r.start_running(6)
    assert r.wait_steps(9) == 5 + 5 and r.service_steps(9) == 3


def test_pin_table_budget_victims_and_expiry():
    pins = PinTable(budget_blocks=5)
    pins.add("old", "r1", [0, 1], now=1.0, ttl=2.0, program_arrival=0.0)
    pins.add("new", "r2", [2, 3], now=1.5, ttl=math.inf, program_arrival=4.0)
    pins.add("mid", "r3", [4], now=2.0, ttl=0.5, program_arrival=2.0)
    assert pins.pinned_blocks == 5 and not pins.fits(1) and pins.fits(0)
    assert [p.program_id for p in pins.victims()] == ["new", "mid", "old"]
    assert [p.program_id for p in pins.victims(exclude="new")] == ["mid", "old"]
    assert [p.program_id for p in pins.expired(2.5)] == ["mid"]
    assert [p.program_id for p in pins.expired(3.0)] == ["mid", "old"]
    pins.remove("mid")
    assert pins.pinned_blocks == 4 and pins.fits(1)
    pins.check()
    with pytest.raises(AssertionError):
        pins.add("x", "r4", [5, 6], now=3.0, ttl=1.0, program_arrival=5.0)


def test_active_holds_exactly_the_admitted_records_even_when_one_is_forgotten():
    t = ProgramTable(idle_timeout=10.0)
    ra, rb = req("a", 0.0), req("b", 1.0)
    a, b = t.on_arrival(ra, 0.0), t.on_arrival(rb, 1.0)
    assert t.active == {} and a.live == {ra.request_id: ra} and a.num_live == 1
    t.set_admitted(a, True)
    t.set_admitted(b, True)
    assert t.active == {"a": a, "b": b}
    t.set_admitted(b, False)                  # b's program ended
    assert t.active == {"a": a}
    t.on_finish(a, ra)                         # a between turns: still active, nothing live
    a.num_waiting = 0
    assert t.active == {"a": a} and a.num_live == 0
    t.check()
    assert t.gc(10.5) == 1 and "a" not in t and t.active == {}   # idle too long: forgotten
    t.check()


def test_the_system_sums_follow_arrivals_finishes_and_forgetting_exactly():
    """A program is in the system while live or between turns of a continuing program; its
    size is its latest prompt while live, its context after a turn that ends in a tool call."""
    t = ProgramTable(idle_timeout=10.0)
    t.price = lambda n: 0.5 * n                  # seconds per token, to see the price sum
    a1, b1 = areq("a1", 10, 0.0, "a"), areq("b1", 30, 0.0, "b")
    a, b = t.on_arrival(a1, 0.0), t.on_arrival(b1, 0.0)
    assert (t.num_in_system, t.sum_tokens, t.sum_price) == (2, 40, 20.0)
    a1.append_output_token(7)
    t.on_finish(a, a1, continues=True)           # a goes to its tool: sized by its context
    assert (a.size, t.num_in_system, t.sum_tokens, t.sum_price) == (11, 2, 41, 20.5)
    a2 = areq("a2", 25, 1.0, "a")
    t.on_arrival(a2, 1.0)                        # its next turn: the new prompt
    assert (a.size, t.sum_tokens) == (25, 55)
    t.on_finish(a, a2, continues=False)          # a ended
    t.on_finish(b, b1, continues=False)          # b aborted (or ended)
    assert (t.num_in_system, t.sum_tokens, t.sum_price) == (0, 0, 0.0)
    c1 = areq("c1", 8, 2.0, "c")
    c = t.on_arrival(c1, 2.0)
    t.on_finish(c, c1, continues=True)
    assert (t.num_in_system, t.sum_tokens) == (1, 8)
    t.check()
    assert t.gc(12.5) == 3 and (t.num_in_system, t.sum_tokens, t.sum_price) == (0, 0, 0.0)
    t.check()


def test_the_peak_sums_follow_the_projected_peak_read_when_the_size_changes():
    """Each program's peak is ``projected_peak(rec, size)`` at the event that set its size (never
    below the size), priced like the size; the peak sums follow it exactly."""
    t = ProgramTable(idle_timeout=10.0)
    t.price = lambda n: 0.5 * n
    t.projected_peak = lambda rec, size: size + 10 * rec.turns_arrived if rec.program_id != "b" else size - 5
    a1, b1 = areq("a1", 10, 0.0, "a"), areq("b1", 30, 0.0, "b")
    a, b = t.on_arrival(a1, 0.0), t.on_arrival(b1, 0.0)
    assert (a.peak, b.peak) == (20, 30)                          # b's projection is below its size
    assert (t.peak_tokens, t.peak_price) == (50, 25.0)
    a1.append_output_token(7)
    t.on_finish(a, a1, continues=True)                           # a in its tool call: 11 + 10
    assert (a.peak, t.peak_tokens, t.peak_price) == (21, 51, 25.5)
    a2 = areq("a2", 25, 1.0, "a")
    t.on_arrival(a2, 1.0)                                        # turn 2: 25 + 20
    assert (a.peak, t.peak_tokens) == (45, 75)
    t.check()
    t.forget("a")
    t.on_finish(b, b1, continues=False)
    assert (t.num_in_system, t.peak_tokens, t.peak_price) == (0, 0, 0.0)
    t.check()
