"""LLMEngine.stats() (what /metrics scrapes, on the engine thread) is O(1): it never walks the
KV blocks, and its block counts equal a full walk of the pool."""
import pytest

from continuum.config import EngineArgs
from continuum.engine.engine import LLMEngine
from continuum.kv.block_pool import FreeBlockQueue
from continuum.sampling_params import SamplingParams


class _NoIterList(list):
    def __iter__(self):
        raise AssertionError("stats() iterated the KV blocks")


@pytest.mark.parametrize("policy", ["vllm", "continuum", "continuum+"])
def test_stats_do_not_walk_blocks_and_match_a_walk(policy, monkeypatch):
    eng = LLMEngine(EngineArgs.from_kwargs(model="random:tiny", dtype="float32", device="cpu",
                                           kv_cache_memory="1MiB", scheduling_policy=policy))
    params = SamplingParams(max_tokens=8, ignore_eos=True)
    eng.add_request(list(range(1, 40)), params)
    while eng.has_unfinished_requests():           # leaves 2 cached blocks
        eng.step()
    eng.add_request(list(range(1, 40)), params)     # hits them, then runs one step
    eng.add_request(list(range(50, 90)), params)
    eng.step()
    pool = eng.scheduler.kv.pool
    walk = pool.walk_counts()
    assert walk["in_use"] == 6 and walk["cached"] == 0
    monkeypatch.setattr(FreeBlockQueue, "__iter__", _NoIterList.__iter__)
    monkeypatch.setattr(pool, "blocks", _NoIterList(pool.blocks))
    s = eng.stats()
    assert (s["kv_blocks_total"], s["kv_blocks_in_use"], s["kv_blocks_cached"]) == \
        (walk["total"], walk["in_use"], walk["cached"])
    monkeypatch.undo()
    while eng.has_unfinished_requests():
        eng.step()
    assert eng.stats()["kv_blocks_cached"] == pool.walk_counts()["cached"] == 4   # 2 + 2 full
    eng.check_integrity()


@pytest.mark.parametrize("policy", ["vllm", "continuum+"])
def test_engine_and_simulator_report_the_same_keys(policy):
    """The simulator reads the same interface as /metrics: a simulated replica's snapshot has
    exactly the keys of ``LLMEngine.stats()`` for the same policy."""
    from continuum.sim.cost_model import CostModel
    from continuum.sim.profile import load_profile
    from continuum.sim.simulator import SimConfig
    from continuum.sim.stepper import SimReplica, make_scheduler

    eng = LLMEngine(EngineArgs.from_kwargs(model="random:tiny", dtype="float32", device="cpu",
                                           kv_cache_memory="1MiB", scheduling_policy=policy))
    eng.add_request(list(range(1, 20)), SamplingParams(max_tokens=2, ignore_eos=True))
    while eng.has_unfinished_requests():
        eng.step()
    cost = CostModel(load_profile("h200-llama3.1-8b"))
    rep = SimReplica(make_scheduler(cost, SimConfig(policy=policy), 64, 1024), cost, 16)
    stats = eng.stats()
    assert set(rep.snapshot()) == set(stats)
    assert stats["steps_total"] > 0 and stats["scheduler_time_seconds_max"] <= \
        stats["scheduler_time_seconds_total"]
