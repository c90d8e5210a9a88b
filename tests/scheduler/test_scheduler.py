"""Scheduler core with the vllm policy: a fake executor (no model) and an injected clock."""
import pytest

from continuum.config import CacheConfig, SchedulerConfig
from continuum.request import Request, RequestStatus
from continuum.sampling_params import SamplingParams
from continuum.scheduler.scheduler import Scheduler

# Without program ids every policy orders like vllm and never pins: the same exact plans.
ALL_POLICIES = ["vllm", "continuum", "continuum+", "program-fcfs", "fixed-ttl", "infercept"]


def make_sched(num_blocks=16, block_size=4, budget=16, max_seqs=8, max_len=64, policy="vllm"):
    return Scheduler(SchedulerConfig(max_num_batched_tokens=budget, max_num_seqs=max_seqs, policy=policy),
                     CacheConfig(block_size=block_size), num_blocks, max_len)


def req(rid, n_prompt, t, max_tokens=3, base=0, **kw):
    return Request(rid, list(range(base, base + n_prompt)),
                   SamplingParams(max_tokens=max_tokens, ignore_eos=True, **kw), arrival_time=t)


def step(s, now, tok=7):
    out = s.schedule(now)
    sampled = [tok if x.samples else None for x in out.scheduled]
    done = s.update_from_output(out, sampled, now)
    return out, done


def plan(out):
    return [(x.request.request_id, x.start, x.num_new_tokens, x.samples) for x in out.scheduled]


@pytest.mark.parametrize("policy", ALL_POLICIES)
def test_chunked_prefill_shares_budget_with_decodes(policy):
    s = make_sched(budget=8, policy=policy)
    s.add_request(req("a", 5, 0.0, max_tokens=4))
    s.add_request(req("b", 12, 1.0, base=100))
    out, _ = step(s, 2.0)
    assert plan(out) == [("a", 0, 5, True), ("b", 0, 3, False)]
    out, _ = step(s, 3.0)
    # a decodes one token, b gets the rest of the budget as its next chunk
    assert plan(out) == [("a", 5, 1, True), ("b", 3, 7, False)]
    out, _ = step(s, 4.0)
    assert plan(out) == [("a", 6, 1, True), ("b", 10, 2, True)]
    while s.has_unfinished():
        step(s, 5.0)
    s.check_integrity()


def test_prefix_hit_within_one_step_on_blocks_filled_by_an_earlier_request():
    # b's first block is a's first block, written earlier in the same forward pass
    # (every layer writes all new K/V before any attention reads).
    s = make_sched(budget=64)
    s.add_request(req("a", 5, 0.0))
    s.add_request(req("b", 12, 1.0))
    out, _ = step(s, 2.0)
    assert plan(out) == [("a", 0, 5, True), ("b", 4, 8, True)]
    assert s.kv.get_block_ids(s.requests["b"])[0] == s.kv.get_block_ids(s.requests["a"])[0] == 0


@pytest.mark.parametrize("policy", ALL_POLICIES)
def test_fcfs_admission_and_max_num_seqs(policy):
    s = make_sched(max_seqs=2, budget=64, policy=policy)
    for i, t in enumerate([3.0, 1.0, 2.0]):
        s.add_request(req(f"r{i}", 4, t, base=10 * i))
    out, _ = step(s, 5.0)
    assert [x.request.request_id for x in out.scheduled] == ["r1", "r2"]
    assert [r.request_id for r in s.waiting] == ["r0"]
    assert s.requests["r1"].queued_time == 4.0


def test_finish_by_max_tokens_frees_blocks_and_records_times():
    s = make_sched()
    r = req("a", 4, 0.0, max_tokens=2)
    s.add_request(r)
    step(s, 1.0)
    _, done = step(s, 2.0)
    assert done == [r] and r.status == RequestStatus.FINISHED_LENGTH
    assert r.output_token_ids == [7, 7] and r.first_token_time == 1.0 and r.finished_time == 2.0
    s.check_integrity()
    assert s.kv.pool.counts()["in_use"] == 0


def test_eos_and_stop_token_and_min_tokens():
    s = make_sched()
    a = Request("a", [1, 2, 3], SamplingParams(max_tokens=10), 0.0, eos_token_ids=[7])
    b = Request("b", [1, 2, 3], SamplingParams(max_tokens=10, stop_token_ids=[7], min_tokens=2,
                                               ignore_eos=True), 0.0, eos_token_ids=[7])
    s.add_request(a)
    s.add_request(b)
    _, done = step(s, 1.0, tok=7)
    assert done == [a] and a.status == RequestStatus.FINISHED_STOPPED
    _, done = step(s, 2.0, tok=7)
    assert done == [b] and b.stop_reason == 7 and b.output_token_ids == [7, 7]


def test_prefix_hit_skips_computed_tokens():
    s = make_sched(budget=64)
    s.add_request(req("a", 10, 0.0, max_tokens=1))
    step(s, 1.0)
    assert not s.has_unfinished()
    s.add_request(req("b", 12, 2.0, max_tokens=1))   # same first 10 tokens, then 2 more
    out, _ = step(s, 3.0)
    assert plan(out) == [("b", 8, 4, True)]          # 2 full blocks of 4 hit
    assert s.requests == {} and out.scheduled[0].request.num_cached_tokens == 8
    assert s.kv.stats.hits == 8


# continuum+ holds b at its door instead (tests/scheduler/test_admission.py)
@pytest.mark.parametrize("policy", [p for p in ALL_POLICIES if p != "continuum+"])
def test_preemption_by_recompute_picks_latest_arrival_and_recovers(policy):
    # 4 blocks of 4 tokens; two requests of 6 prompt tokens grow until they collide
    s = make_sched(num_blocks=4, block_size=4, budget=64, max_len=16, policy=policy)
    a, b = req("a", 6, 0.0, max_tokens=6), req("b", 6, 1.0, max_tokens=6, base=100)
    s.add_request(a)
    s.add_request(b)
    out, _ = step(s, 2.0)
    assert plan(out) == [("a", 0, 6, True), ("b", 0, 6, True)]
    assert s.kv.get_block_ids(a) == [0, 1] and s.kv.get_block_ids(b) == [2, 3]
    step(s, 3.0)                                      # 7 tokens each: still fit
    out, _ = step(s, 4.0)                             # 8 tokens: fits (2 blocks of 4)
    out, _ = step(s, 5.0)                             # 9th token needs a 3rd block each
    assert out.preempted_ids == ["b"]
    assert plan(out) == [("a", 8, 1, True)]
    assert b.status == RequestStatus.PREEMPTED and b.num_computed_tokens == 0 and b.num_preemptions == 1
    s.check_integrity()
    while s.has_unfinished():
        step(s, 6.0)
    assert a.num_output_tokens == 6 and b.num_output_tokens == 6
    s.check_integrity()
    assert s.stats.num_preemptions >= 1


def test_lone_request_never_deadlocks_at_capacity():
    s = make_sched(num_blocks=2, block_size=4, max_len=8)
    r = req("a", 5, 0.0, max_tokens=100)
    s.add_request(r)
    while s.has_unfinished():
        step(s, 1.0)
    assert r.status == RequestStatus.FINISHED_LENGTH and r.num_tokens == 8
    s.check_integrity()


def test_abort_waiting_and_running():
    s = make_sched(max_seqs=1)
    s.add_request(req("a", 4, 0.0, max_tokens=50))
    s.add_request(req("b", 4, 1.0))
    step(s, 2.0)
    done = s.finish_requests(["a", "b", "zzz"], RequestStatus.FINISHED_ABORTED, 3.0)
    assert {r.request_id for r in done} == {"a", "b"}
    assert not s.has_unfinished()
    s.check_integrity()
    assert s.schedule(4.0).finished_ids == ["a", "b"]


def test_ties_go_by_arrival_at_this_scheduler_and_schedulers_number_apart():
    """``Request.seq_no`` is the order a request reached its scheduler (no process-wide
    counter): equal arrival times are admitted in add order, whatever order the requests
    were built in, and another scheduler in the process numbers its own from 0."""
    s, other = make_sched(max_seqs=1), make_sched()
    b, a = req("b", 4, 0.0), req("a", 4, 0.0)           # built b first
    other.add_request(req("x", 4, 0.0))
    s.add_request(a)
    s.add_request(b)
    assert (a.seq_no, b.seq_no, other.requests["x"].seq_no) == (0, 1, 0)
    out, _ = step(s, 0.0)
    assert [x.request.request_id for x in out.scheduled] == ["a"]


def test_the_policy_sees_the_queues_read_only_and_live():
    s = make_sched(max_seqs=1)
    ctx = s.agents.ctx
    s.add_request(req("a", 4, 0.0))
    s.add_request(req("b", 4, 0.0))
    step(s, 0.0)
    assert [r.request_id for r in ctx.running] == ["a"] and [r.request_id for r in ctx.waiting] == ["b"]
    assert len(ctx.waiting) == 1 and ctx.waiting[0] is s.waiting[0] and s.waiting[0] in ctx.waiting
    for mutate in (lambda q: q.append(None), lambda q: q.sort(), lambda q: q.remove(q[0]),
                   lambda q: q.__setitem__(0, None), lambda q: q.__delitem__(0)):
        with pytest.raises((AttributeError, TypeError)):
            mutate(ctx.running)
    ctx.waiting[:].clear()                               # a slice is a copy
    assert [r.request_id for r in s.waiting] == ["b"]
