"""The pure router: each policy's placements, load accounting, pins, replica failure."""
from __future__ import annotations

import pytest

from continuum.distributed.router import NoReplicaError, Router


def finish(r: Router, rid: str, now: float, out: int = 10, **kw) -> None:
    r.on_start(rid)
    r.on_finish(rid, now, output_tokens=out, **kw)


def assert_idle(r: Router) -> None:
    for i in r.replicas:
        assert r.replicas[i].waiting_tokens == pytest.approx(0.0) and r.replicas[i].running == 0
    assert not r.requests


def test_continuum_affinity_keeps_programs_and_balances_new_ones():
    r = Router("continuum", [0, 1])
    homes = {}
    for p in ("a", "b", "c", "d"):          # all in flight at once: the load spreads them
        homes[p] = r.route(f"{p}#0", p, 1000, 0.0).replica
    assert sorted(homes.values()) == [0, 0, 1, 1]
    for p in homes:
        finish(r, f"{p}#0", 1.0)
    for turn in range(1, 5):                # later turns follow the KV, whatever the load
        for p in homes:
            d = r.route(f"{p}#{turn}", p, 1000 + 200 * turn, float(turn))
            assert (d.replica, d.reason) == (homes[p], "affinity")
        for p in homes:
            finish(r, f"{p}#{turn}", turn + 0.5)
    assert_idle(r)


def test_expected_new_tokens_count_only_the_uncached_part():
    r = Router("continuum", [0, 1])
    r.route("a#0", "a", 3000, 0.0)
    finish(r, "a#0", 1.0, out=100)           # replica 0 now holds 3100 tokens of "a"
    assert r.expected_new_tokens("a", 0, 3500) == 400
    assert r.expected_new_tokens("a", 1, 3500) == 3500
    r.route("a#1", "a", 3500, 2.0)
    assert r.replicas[0].waiting_tokens == 400


def test_pinned_program_never_moves_idle_one_rebalances():
    r = Router("continuum", [0, 1], rebalance_margin=0)
    r.route("a#0", "a", 100, 0.0)
    finish(r, "a#0", 1.0, pin_until=10.0)
    r.replicas[0].waiting_tokens += 100_000  # replica 0 gets very busy with other programs
    d = r.route("a#1", "a", 200, 2.0)       # pin alive: stays despite the load
    assert (d.replica, d.reason) == (0, "pinned")
    finish(r, "a#1", 3.0, pin_until=None)
    d = r.route("a#2", "a", 300, 4.0)       # idle and the gap dwarfs its context: moves
    assert (d.replica, d.reason) == (1, "rebalance")
    assert r.programs["a"].replica == 1 and r.programs["a"].resident_tokens == 0


def test_no_rebalance_when_moving_costs_more_than_the_queue():
    r = Router("continuum", [0, 1])
    r.route("a#0", "a", 20_000, 0.0)
    finish(r, "a#0", 1.0)
    r.replicas[0].waiting_tokens += 5_000   # less than recomputing 20k tokens elsewhere
    d = r.route("a#1", "a", 20_500, 2.0)
    assert (d.replica, d.reason) == (0, "affinity")


def test_program_with_a_call_in_flight_does_not_move():
    r = Router("continuum", [0, 1], rebalance_margin=0)
    r.route("a#0", "a", 100, 0.0)
    r.replicas[0].waiting_tokens += 1e6
    d = r.route("a#0b", "a", 100, 0.1)      # a parallel call of the same program
    assert (d.replica, d.reason) == (0, "affinity")


def test_round_robin_cycles_and_skips_dead_replicas():
    r = Router("round-robin", [0, 1, 2])
    got = [r.route(f"q{i}", "p", 10, 0.0).replica for i in range(6)]
    assert got == [0, 1, 2, 0, 1, 2]
    r.remove_replica(1)
    got = {r.route(f"s{i}", "p", 10, 0.0).replica for i in range(4)}
    assert got == {0, 2}


def test_least_loaded_ignores_the_program():
    r = Router("least-loaded", [0, 1])
    assert r.route("a#0", "a", 1000, 0.0).replica == 0
    assert r.route("b#0", "b", 10, 0.0).replica == 1
    finish(r, "b#0", 0.5)
    r.on_start("a#0")                       # replica 0: one running; replica 1: empty
    assert r.route("a#1", "a", 1100, 1.0).replica == 1


def test_autellix_short_calls_balance_long_calls_follow_the_program():
    r = Router("autellix", [0, 1])
    assert r.route("a#0", "a", 4000, 0.0).replica == 0           # no KV yet: least used
    finish(r, "a#0", 1.0)
    r.replicas[0].waiting_tokens += 10_000
    d = r.route("a#1", "a", 4100, 2.0)                           # long: the program's replica
    assert (d.replica, d.reason) == (0, "autellix-long")
    d = r.route("b#0", "b", 2048, 2.0)                           # short: least used
    assert (d.replica, d.reason) == (1, "autellix-short")


def test_replica_failure_reroutes_programs_and_reports_lost_requests():
    r = Router("continuum", [0, 1])
    assert r.route("a#0", "a", 100, 0.0).replica == 0
    assert r.route("b#0", "b", 100, 0.0).replica == 1
    finish(r, "b#0", 1.0, pin_until=50.0)
    r.route("b#1", "b", 150, 2.0)
    lost = r.remove_replica(1)
    assert lost == ["b#1"] and r.stats.requests_failed == 1
    r.on_finish("b#1", 3.0, ok=False)                             # late report: a no-op
    d = r.route("b#2", "b", 200, 3.0)
    assert (d.replica, d.reason) == (0, "new")                     # recomputes on replica 0
    assert r.snapshot()["router_programs_rerouted_total"] == 1
    r.add_replica(2)                                               # a replica added back
    assert r.route("c#0", "c", 10, 4.0).replica == 2
    r.remove_replica(0)
    r.remove_replica(2)
    with pytest.raises(NoReplicaError):
        r.route("d#0", "d", 10, 5.0)


def test_last_step_and_gc_forget_programs():
    r = Router("continuum", [0], program_idle_timeout=10.0)
    r.route("a#0", "a", 10, 0.0)
    finish(r, "a#0", 1.0, last_step=True)
    r.route("b#0", "b", 10, 0.0)
    finish(r, "b#0", 1.0)
    assert set(r.programs) == {"b"}
    assert r.gc(5.0) == 0 and r.gc(20.0) == 1 and not r.programs
    assert_idle(r)


def test_aborted_request_before_start_releases_its_waiting_tokens():
    r = Router("least-loaded", [0, 1])
    r.route("a#0", "a", 500, 0.0)
    r.on_finish("a#0", 0.1, ok=False)
    assert_idle(r)


def test_unknown_policy_is_an_error():
    with pytest.raises(ValueError, match="routing policy"):
        Router("random", [0])


def test_rebalance_factor_needs_a_much_longer_home_queue():
    r = Router("continuum", [0, 1], rebalance_margin=0, rebalance_factor=4.0)
    r.route("a#0", "a", 1000, 0.0)
    finish(r, "a#0", 1.0)
    r.replicas[1].waiting_tokens += 1000
    r.replicas[0].waiting_tokens += 6000    # 6000 + 100 < 4 * (1000 + 1100): stays
    assert r.route("a#1", "a", 1100, 2.0).reason == "affinity"
    finish(r, "a#1", 3.0)
    r.replicas[0].waiting_tokens += 10_000  # 16000 + 100 > 4 * (1000 + 1200): moves
    assert r.route("a#2", "a", 1200, 4.0).reason == "rebalance"
