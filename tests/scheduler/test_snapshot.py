"""The one stats interface (``continuum.snapshot``): each layer reports its own keys, the
scheduler's snapshot is their disjoint union, and the names /metrics exports stay put."""
import pytest

from continuum.scheduler.stats import TTL_BUCKETS_MS
from continuum.scheduler.policy import PIN_DECISIONS
from continuum.snapshot import compose
from tests.scheduler.agent_helpers import ConstTTL, areq, make_sched, run_until_idle

# Every key /metrics exported before the layers reported their own (continuum_engine_<key>).
BASE_KEYS = {
    "num_requests_running", "num_requests_waiting", "kv_blocks_total", "kv_blocks_in_use",
    "kv_blocks_cached", "kv_usage", "prefix_cache_queries_total", "prefix_cache_hits_total",
    "kv_evictions_total", "preemptions_total", "requests_finished_total",
    "queueing_delay_seconds_total", "admissions_total", "steps_total",
    "prefix_cache_host_hits_total", "swap_in_blocks_total", "swap_out_blocks_total",
    "host_kv_blocks_total", "host_kv_blocks_used", "pins_made_total", "pins_hit_total",
    "pins_expired_total", "pins_force_released_total", "pins_rejected_total",
    "pins_released_by_policy_total", "pinned_programs", "pinned_blocks",
    "pins_dropped_program_end_total", "pin_ttl_seconds_sum", "pin_ttl_queue_delay_seconds",
    "pin_ttl_eta", "tool_durations_seen_total", "programs_tracked", "programs_forgotten_total",
    "tools_tracked", "tools_evicted_total",
    "tool_drift_detections_total", "pins_retimed_after_drift_total",          # kv_ttl/drift.py
    *(f"pin_ttl_ms_le_{'inf' if b == float('inf') else int(b)}" for b in TTL_BUCKETS_MS),
    *(f"pin_decisions_{r}_total" for r in PIN_DECISIONS),
}
ADMISSION_KEYS = {"admission_held_steps_total", "admission_working_set_blocks",
                  "admission_faults_total", "admission_returns_total", "admission_timeouts_total",
                  "admission_demoted_total", "admission_door_engaged", "kv_eviction_horizon_seconds"}


def test_compose_refuses_a_key_two_layers_report():
    assert compose({"a": 1}, {"b": 2}) == {"a": 1, "b": 2}
    with pytest.raises(ValueError, match="'b'"):
        compose({"a": 1, "b": 2}, {"b": 3})


@pytest.mark.parametrize("policy,extra", [("vllm", set()), ("continuum", set()),
                                          ("continuum+", ADMISSION_KEYS)])
def test_scheduler_snapshot_is_the_disjoint_union_of_its_layers(policy, extra):
    s = make_sched(policy, host_blocks=4)
    layers = [s.kv.snapshot(), s.stats.snapshot(), s.agents.snapshot(), s.policy.snapshot(),
              s.kv.pool.snapshot(), s.kv.host.snapshot(), s.agents.pins.snapshot(),
              s.agents.programs.snapshot(), s.agents.ctx.predictor.snapshot()]
    snap = s.snapshot()
    assert set(snap) == BASE_KEYS | extra
    for part in layers:               # each layer's keys appear once, with its values
        assert {k: snap[k] for k in part} == part


def test_snapshot_values_are_the_layers_counters():
    s = make_sched(ConstTTL(2.0))
    s.add_request(areq("t1", 10, 0.0, "p"))
    run_until_idle(s, 0.0)
    snap = s.snapshot()
    assert snap["pins_made_total"] == s.stats.pins_made == 1
    assert snap["pinned_programs"] == 1 and snap["pinned_blocks"] == s.agents.pins.pinned_blocks == 2
    assert snap["requests_finished_total"] == 1 and snap["programs_tracked"] == 1
    assert snap["prefix_cache_queries_total"] == s.kv.stats.queries == 10
    assert snap["kv_blocks_in_use"] == 2 and snap["host_kv_blocks_total"] == 0
    assert snap["pin_decisions_pinned_total"] == 1 and snap["pin_ttl_ms_le_2000"] == 1
