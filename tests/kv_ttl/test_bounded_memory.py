"""Memory keyed by client strings (tool names, program ids) is bounded: least recently used
entries go first, entries in use never."""
from continuum.distributed.router import Router
from continuum.kv_ttl.predictor import MAX_TOOL_NAME_CHARS, DurationPredictor
from continuum.kv_ttl.programs import ProgramTable
from tests.scheduler.agent_helpers import areq


def req(pid: str, t: float):
    return areq(f"{pid}@{t}", [1, 2], t, pid)


def test_tool_histories_are_an_lru_of_bounded_size():
    p = DurationPredictor(k=1, max_tools=3)
    for name in ("a", "b", "c"):
        p.observe(name, 1.0)
    p.observe("a", 2.0)                      # a is now the most recently observed
    p.observe("d", 3.0)                      # evicts b, the least recently observed
    assert list(p.per_tool) == ["c", "a", "d"] and p.num_tools_evicted == 1
    assert list(p.per_tool["a"].values) == [1.0, 2.0]
    assert p.level("b") == "pooled"          # forgotten: falls back to the pooled history
    assert p.total_seen == 5


def test_tool_names_are_cut_to_a_bounded_key():
    p = DurationPredictor(k=1)
    long_a, long_b = "x" * MAX_TOOL_NAME_CHARS + "a", "x" * MAX_TOOL_NAME_CHARS + "b"
    p.observe(long_a, 1.0)
    p.observe(long_b, 2.0)
    assert list(p.per_tool) == ["x" * MAX_TOOL_NAME_CHARS]
    assert p.samples(long_a) == [1.0, 2.0] and p.mean(long_b) == 1.5


def test_program_table_is_capped_and_keeps_programs_in_use():
    t = ProgramTable(idle_timeout=1e9, max_programs=3)
    reqs = [req(pid, float(i)) for i, pid in enumerate("abc")]
    recs = [t.on_arrival(r, r.arrival_time) for r in reqs]
    for i in (0, 2):                                 # a and c idle, b has a live request
        t.on_finish(recs[i], reqs[i])
        recs[i].num_waiting = 0
    t.on_arrival(req("d", 3.0), 3.0)                 # evicts a (least recently active idle)
    assert "a" not in t and {"b", "c", "d"} == {pid for pid in "bcd" if pid in t}
    t.on_arrival(req("e", 4.0), 4.0)                 # b is live: skipped (touched); c goes
    assert "c" not in t and "b" in t and len(t) == 3 and t.num_forgotten == 2


def test_program_table_may_exceed_the_cap_only_with_programs_in_use():
    t = ProgramTable(max_programs=2)
    for i in range(5):
        t.on_arrival(req(f"p{i}", float(i)), float(i))   # every one has a live request
    assert len(t) == 5 and t.num_forgotten == 0


def test_router_program_table_is_capped():
    r = Router("continuum", [0, 1], max_programs=10)
    for i in range(100):
        r.route(f"r{i}", f"prog{i}", 10, now=float(i))
        r.on_start(f"r{i}")
        r.on_finish(f"r{i}", now=float(i) + 0.5, output_tokens=1)
    assert len(r.programs) <= 10
    assert "prog99" in r.programs and "prog0" not in r.programs
