"""``continuum serve MODEL --replicas N``: the OpenAI server over N Ray engine replicas.

The app is the one-engine app (``create_app``) given a ``DistributedEngineClient``; this file
only connects to Ray, starts the replicas, and adds two operator routes under /debug (so the
API key guard covers them):

- ``GET /debug/replicas``: every replica ever started (index, alive, host, device, in-flight
  requests, router load);
- ``POST /debug/replicas``: start one more replica (e.g. to replace a dead one); returns it.
"""
from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI

from continuum.distributed.client import DistributedEngineClient

logger = logging.getLogger(__name__)


def init_ray(address: str | None, num_cpus: float | None = None) -> None:
    """Connect to the cluster at ``address`` ("auto": the one this node belongs to), or start a
    local one (no dashboard: nothing listens beyond what Ray itself needs)."""
    import ray
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False)


def add_replica_routes(app: FastAPI, client: DistributedEngineClient) -> None:
    @app.get("/debug/replicas")
    async def list_replicas():
        return {"replicas": client.replicas(), "routing_policy": client.router.policy_name}

    @app.post("/debug/replicas")
    async def add_replica():
        index = await client.add_replica()
        return {"added": index, "replicas": client.replicas()}


def build_distributed_app(engine_kwargs: dict[str, Any], opts, num_replicas: int,
                          routing_policy: str = "continuum",
                          max_waiting_requests: int | None = None,
                          **client_kwargs: Any) -> tuple[FastAPI, DistributedEngineClient]:
    """Start the replicas (Ray must be initialised) and build the app around them."""
    from continuum.entrypoints.openai.api_server import create_app

    client = DistributedEngineClient(engine_kwargs, num_replicas, routing_policy=routing_policy,
                                     max_waiting_requests=max_waiting_requests, **client_kwargs)
    app = create_app(client, opts)
    add_replica_routes(app, client)
    return app, client


def run_distributed_server(engine_kwargs: dict[str, Any], host: str, port: int, opts,
                           max_waiting_requests: int | None, log_level: str = "info", *,
                           num_replicas: int = 1, ray_address: str | None = None,
                           routing_policy: str = "continuum") -> None:
    """Serve until SIGINT/SIGTERM; the replicas stop with the server."""
    import uvicorn

    from continuum.entrypoints.openai.api_server import is_loopback

    if not is_loopback(host) and not opts.api_key:
        logger.warning("serving on %s without --api-key: anyone who can reach it can use it", host)
    init_ray(ray_address)
    app, _client = build_distributed_app(engine_kwargs, opts, num_replicas, routing_policy,
                                         max_waiting_requests)
    uvicorn.run(app, host=host, port=port, log_level=log_level,
                timeout_graceful_shutdown=max(1, int(opts.shutdown_timeout)))
