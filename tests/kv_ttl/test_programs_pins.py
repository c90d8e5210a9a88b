"""Program records (bounded memory) and the pin table (budget, victim order)."""
import math

import pytest

from continuum.kv_ttl.pins import PinTable
from continuum.kv_ttl.programs import ProgramTable


def test_idle_programs_are_forgotten_live_and_pinned_ones_kept():
    t = ProgramTable(idle_timeout=10.0)
    a = t.on_arrival("a", 0.0)
    b = t.on_arrival("b", 1.0)
    c = t.on_arrival("c", 2.0)
    for r in (a, b, c):
        r.num_live = r.num_waiting = 0
    b.num_live = 1                            # still has a request in the system
    c.pinned = True
    assert t.gc(9.0) == 0 and len(t) == 3
    assert t.gc(11.5) == 1 and "a" not in t and "b" in t and "c" in t
    b.num_live, c.pinned = 0, False
    # b was touched at 11.5 when found live: idle again only 10 s later; c was not reached
    assert t.gc(21.0) == 1 and "c" not in t and "b" in t
    assert t.gc(21.6) == 1 and len(t) == 0 and t.num_forgotten == 3


def test_program_record_keeps_first_arrival_and_counts_turns():
    t = ProgramTable()
    r = t.on_arrival("p", 3.0, step=1)
    r2 = t.on_arrival("p", 8.0, step=4)
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
