"""``benchmarks/scheduler_overhead.py`` runs every row it reports, the forced worst case of
``continuum+`` with and without a host tier included (its fake eviction horizon once lacked
what the door reads with a host tier, and that row crashed)."""
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _overhead():
    spec = importlib.util.spec_from_file_location("scheduler_overhead", ROOT / "benchmarks" / "scheduler_overhead.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("host_blocks", [0, 512])
@pytest.mark.parametrize("policy", ["vllm", "continuum+", "continuum+@pressure"])
def test_every_row_runs(policy, host_blocks):
    r = _overhead().bench(policy, steps=3, host_blocks=host_blocks)
    assert r["policy"] == policy and r["host_blocks"] == host_blocks and r["steps"] == 3
    assert r["running"] > 0 and r["running"] + r["waiting"] >= 1000
