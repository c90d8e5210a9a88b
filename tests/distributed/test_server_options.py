"""How ``continuum serve`` starts Ray and guards /debug/replicas, without starting Ray."""
from __future__ import annotations

import pytest

ray = pytest.importorskip("ray")

from ray._private import ray_constants, services  # noqa: E402

from continuum.distributed import server  # noqa: E402
from continuum.errors import ConfigError  # noqa: E402


@pytest.fixture
def fake_ray_init(monkeypatch):
    """Record each ``ray.init`` call's arguments, and the node IP Ray itself would resolve
    ``_node_ip_address`` to at that moment (what its services then advertise and bind)."""
    calls: list[dict] = []

    def fake_init(**kwargs):
        ip = kwargs.get("_node_ip_address")
        calls.append({**kwargs, "resolved_ip": ip and services.resolve_ip_for_localhost(ip)})

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", fake_init)
    return calls


def test_local_head_is_asked_for_loopback(fake_ray_init):
    cluster_flag = ray_constants.ENABLE_RAY_CLUSTER
    server.init_ray(None, num_cpus=2)
    (call,) = fake_ray_init
    assert call["_node_ip_address"] == "127.0.0.1" and call["resolved_ip"] == "127.0.0.1"
    assert call["include_dashboard"] is False and call["num_cpus"] == 2
    assert ray_constants.ENABLE_RAY_CLUSTER == cluster_flag      # restored after ray.init


def test_another_node_ip_is_passed_as_given(fake_ray_init):
    server.init_ray(None, node_ip="192.0.2.7")
    (call,) = fake_ray_init
    assert call["_node_ip_address"] == "192.0.2.7" and call["resolved_ip"] == "192.0.2.7"


@pytest.mark.parametrize("address, env", [("auto", None), (None, "10.0.0.1:6379")])
def test_an_existing_cluster_gets_no_node_ip(fake_ray_init, monkeypatch, address, env):
    if env:
        monkeypatch.setenv("RAY_ADDRESS", env)
    server.init_ray(address)
    (call,) = fake_ray_init
    assert call["address"] == (address or env) and "_node_ip_address" not in call


def test_max_replicas_below_replicas_is_refused_before_ray_starts(fake_ray_init):
    with pytest.raises(ConfigError, match="--max-replicas"):
        server.run_distributed_server({}, "127.0.0.1", 0, None, None, num_replicas=3,
                                      max_replicas=2)
    assert fake_ray_init == []
