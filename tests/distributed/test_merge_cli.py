"""Merging per-replica results, and the serve flags that select distributed serving."""
from __future__ import annotations

from continuum.distributed.merge import merge_results, merge_stats


def test_merge_stats_sums_averages_and_maxes():
    a = {"requests_finished_total": 3, "kv_usage": 0.2, "scheduler_time_seconds_max": 0.5}
    b = {"requests_finished_total": 4, "kv_usage": 0.6, "scheduler_time_seconds_max": 0.1}
    m = merge_stats([a, b])
    assert m["requests_finished_total"] == 7
    assert abs(m["kv_usage"] - 0.4) < 1e-9
    assert m["scheduler_time_seconds_max"] == 0.5


def test_merge_results_flat_stats_keep_per_replica_keys():
    m = merge_results({0: {"num_requests_running": 1}, 2: {"num_requests_running": 5}})
    assert m == {"num_requests_running": 6, "replica0_num_requests_running": 1,
                 "replica2_num_requests_running": 5}


def test_merge_results_integrity_reports():
    ok = {"ok": True, "error": None, "stats": {"kv_blocks_in_use": 0}}
    bad = {"ok": False, "error": "leak", "stats": {"kv_blocks_in_use": 2}}
    m = merge_results({0: ok, 1: bad})
    assert m["ok"] is False and m["error"] == "leak"
    assert m["stats"]["kv_blocks_in_use"] == 2 and m["stats"]["replica1_kv_blocks_in_use"] == 2
    assert merge_results({0: "x", 1: "y"}) == {0: "x", 1: "y"}


def test_serve_flags_select_the_distributed_runner(monkeypatch):
    import continuum.distributed.server as server
    from continuum import cli

    seen = {}

    def fake(engine_kwargs, host, port, opts, max_waiting, log_level, **kw):
        seen.update(kw, model=engine_kwargs["model"], port=port)

    monkeypatch.setattr(server, "run_distributed_server", fake)
    rc = cli.main(["serve", "random:tiny", "--data-parallel-size", "3", "--ray-address", "auto",
                   "--routing-policy", "autellix", "--port", "8123"])
    assert rc == 0
    assert seen == {"num_replicas": 3, "ray_address": "auto", "routing_policy": "autellix",
                    "model": "random:tiny", "port": 8123, "max_replicas": None,
                    "ray_node_ip": "127.0.0.1"}
    seen.clear()
    rc = cli.main(["serve", "random:tiny", "--replicas", "2", "--max-replicas", "4",
                   "--ray-node-ip", "192.0.2.7"])
    assert rc == 0
    assert seen["max_replicas"] == 4 and seen["ray_node_ip"] == "192.0.2.7"
