"""``benchmarks/scheduler_overhead.py`` runs every row it reports, the forced worst case of
``continuum+`` with and without a host tier included (its fake eviction horizon once lacked
what the door reads with a host tier, and that row crashed)."""
import pytest

from tests.bench.scripts import load_benchmark


@pytest.mark.parametrize("host_blocks", [0, 512])
@pytest.mark.parametrize("policy", ["vllm", "continuum+", "continuum+@pressure"])
def test_every_row_runs(policy, host_blocks):
    r = load_benchmark("scheduler_overhead").bench(policy, steps=3, host_blocks=host_blocks)
    assert r["policy"] == policy and r["host_blocks"] == host_blocks and r["steps"] == 3
    assert r["running"] > 0 and r["running"] + r["waiting"] >= 1000
