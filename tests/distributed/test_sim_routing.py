"""The multi-replica simulator drives the real Router and Schedulers."""
from __future__ import annotations

import pytest

from continuum.bench.generators import generate
from continuum.bench.metrics import summarize
from continuum.bench.replay import assign_arrivals
from continuum.distributed.sim_routing import simulate_replicas
from continuum.sim.cost_model import CostModel
from continuum.sim.profile import load_profile
from continuum.sim.simulator import SimConfig, simulate


@pytest.fixture(scope="module")
def cost():
    return CostModel(load_profile("h200-llama3.1-8b"))


@pytest.fixture(scope="module")
def workload():
    progs = generate("swe", 24, seed=3, scale=0.25)
    return progs, assign_arrivals(progs, 0.5, 3)


@pytest.mark.parametrize("policy", ["vllm", "continuum"])
def test_one_replica_equals_the_single_replica_simulator(cost, workload, policy):
    progs, arrivals = workload
    cfg = SimConfig(policy=policy, num_blocks=2000)
    a = simulate(progs, arrivals, cost, cfg)
    b = simulate_replicas(progs, arrivals, cost, cfg, 1, "continuum")
    assert [p.finish for p in a.programs] == [p.finish for p in b.programs]
    assert [[t.cached_tokens for t in p.turns] for p in a.programs] == \
           [[t.cached_tokens for t in p.turns] for p in b.programs]


def test_affinity_beats_round_robin_on_hits_and_is_deterministic(cost, workload):
    progs, arrivals = workload
    cfg = SimConfig(policy="continuum", num_blocks=2000)
    res = {pol: simulate_replicas(progs, arrivals, cost, cfg, 2, pol)
           for pol in ("continuum", "round-robin", "least-loaded", "autellix")}
    hit = {pol: summarize(r.programs, r.stats)["prefix_hit_rate"] for pol, r in res.items()}
    assert hit["continuum"] > hit["round-robin"] + 0.1
    assert hit["continuum"] >= hit["least-loaded"]
    assert all(p.finish is not None for r in res.values() for p in r.programs)
    # both replicas work; the router saw every turn and ends with nothing in flight
    r = res["continuum"]
    assert all(s["requests_finished_total"] > 0 for s in r.replica_stats)
    assert r.router["router_requests_in_flight"] == 0
    assert sum(r.router[f"replica{i}_router_routed_total"] for i in range(2)) == \
           sum(len(p.turns) for p in progs)
    again = simulate_replicas(progs, arrivals, cost, cfg, 2, "continuum")
    assert [p.finish for p in again.programs] == [p.finish for p in r.programs]
