"""``continuum serve MODEL --replicas N``: the OpenAI server over N Ray engine replicas.

The app is the one-engine app (``create_app``) given a ``DistributedEngineClient``; this file
only connects to Ray, starts the replicas, and, with ``--enable-debug-endpoints`` only, adds
two operator routes under /debug (so the API key guard covers them too):

- ``GET /debug/replicas``: every replica ever started (index, alive, host, device, in-flight
  requests, router load);
- ``POST /debug/replicas`` (``Content-Type: application/json`` only, 415 otherwise): start one
  more replica, e.g. to replace a dead one; 409 once alive + starting replicas reach
  ``--max-replicas``.

Invariants: only a POST declared ``application/json`` starts a replica (a browser sends one
cross-site only after a CORS preflight, which this app never grants), and never more than
``max_replicas`` replicas are alive or starting at once. A local Ray head is started on
loopback unless the operator names another node IP (docs/distributed.md).
"""
from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, Request

from continuum.distributed.client import DistributedEngineClient
from continuum.entrypoints.openai.api_server import bind_socket, create_app, is_loopback, serve_on
from continuum.entrypoints.openai.errors import OpenAIError
from continuum.errors import ConfigError

logger = logging.getLogger(__name__)

LOOPBACK_NODE_IP = "127.0.0.1"


def local_head_init_kwargs(num_cpus: float | None, node_ip: str) -> dict[str, Any]:
    """``ray.init`` arguments for a local head: no dashboard, and the node IP every Ray
    service advertises; Ray's gRPC servers bind to 127.0.0.1 when it is 127.0.0.1 and to all
    interfaces otherwise."""
    return {"num_cpus": num_cpus, "include_dashboard": False, "_node_ip_address": node_ip}


@contextlib.contextmanager
def _ray_keeps_node_ip(node_ip: str) -> Iterator[None]:
    """Make ``ray.init`` keep ``node_ip`` when it is loopback (others it keeps anyway).

    On Linux, Ray replaces a loopback node IP with the machine's routable address
    (``services.resolve_ip_for_localhost``) unless ``ray_constants.ENABLE_RAY_CLUSTER`` is
    false, as it is on macOS/Windows where Ray serves loopback only. The constant is read
    when ``ray.init`` runs (after that the started node's own IP is used), so it is switched
    off only around that call and restored, leaving later connections to real clusters alone.
    """
    from ray._private import ray_constants
    if not is_loopback(node_ip):
        yield
        return
    saved = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved


def init_ray(address: str | None, num_cpus: float | None = None,
             node_ip: str = LOOPBACK_NODE_IP) -> None:
    """Connect to the cluster at ``address`` (or ``$RAY_ADDRESS``; "auto": the one this node
    belongs to), or start a local head whose services advertise, and listen on, ``node_ip``:
    loopback by default, so nothing of Ray is reachable from other machines."""
    import ray
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
        return
    kwargs = local_head_init_kwargs(num_cpus, node_ip)
    with _ray_keeps_node_ip(node_ip):
        ray.init(**kwargs)


def _require_json(raw: Request) -> None:
    """415 unless the body is declared JSON: browsers send ``application/json`` cross-site
    only after a CORS preflight, so a page the operator visits cannot start replicas. The
    body itself carries no parameters (``{}``)."""
    media_type = raw.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise OpenAIError(415, "POST /debug/replicas needs 'Content-Type: application/json' "
                          "(the body may be {})", code="unsupported_media_type")


class ReplicaCap:
    """Starts replicas for POST /debug/replicas without exceeding ``max_replicas``.

    Invariant: alive + starting replicas <= ``max_replicas``. The check and the increment of
    ``starting`` run on the event loop with no await between them, so concurrent POSTs cannot
    both pass the check. A replica whose process died counts until the health check has
    removed it (within a second, or the ping timeout if it hangs)."""

    def __init__(self, client: DistributedEngineClient, max_replicas: int):
        self.client, self.max_replicas = client, max_replicas
        self.starting = 0

    async def add(self) -> int:
        alive = len(self.client.pool.alive())
        if alive + self.starting >= self.max_replicas:
            raise OpenAIError(409, f"{alive} replicas alive and {self.starting} starting: at "
                              f"--max-replicas {self.max_replicas}; a replica can be added "
                              "once one has died", code="replica_limit_reached")
        self.starting += 1
        try:
            return await self.client.add_replica()
        finally:
            self.starting -= 1


def add_replica_routes(app: FastAPI, client: DistributedEngineClient, max_replicas: int) -> None:
    """Mount GET/POST /debug/replicas (only for ``--enable-debug-endpoints``)."""
    cap = ReplicaCap(client, max_replicas)

    @app.get("/debug/replicas")
    async def list_replicas():
        return {"replicas": client.replicas(), "routing_policy": client.router.policy_name,
                "max_replicas": cap.max_replicas}

    @app.post("/debug/replicas")
    async def add_replica(raw: Request):
        _require_json(raw)
        index = await cap.add()
        return {"added": index, "replicas": client.replicas()}


def create_distributed_app(client: DistributedEngineClient, opts,
                           max_replicas: int | None = None) -> FastAPI:
    """The server app over ``client``; ``max_replicas`` defaults to the replicas it started."""
    app = create_app(client, opts)
    if opts.debug_endpoints:
        started = len(client.pool.handles)
        add_replica_routes(app, client, max_replicas if max_replicas is not None else started)
    return app


def build_distributed_app(engine_kwargs: dict[str, Any], opts, num_replicas: int,
                          routing_policy: str = "continuum",
                          max_waiting_requests: int | None = None, *,
                          max_replicas: int | None = None,
                          **client_kwargs: Any) -> tuple[FastAPI, DistributedEngineClient]:
    """Start the replicas (Ray must be initialised) and build the app around them."""
    client = DistributedEngineClient(engine_kwargs, num_replicas, routing_policy=routing_policy,
                                     max_waiting_requests=max_waiting_requests, **client_kwargs)
    return create_distributed_app(client, opts, max_replicas), client


def run_distributed_server(engine_kwargs: dict[str, Any], host: str, port: int, opts,
                           max_waiting_requests: int | None, log_level: str = "info", *,
                           num_replicas: int = 1, ray_address: str | None = None,
                           routing_policy: str = "continuum", max_replicas: int | None = None,
                           ray_node_ip: str = LOOPBACK_NODE_IP) -> None:
    """Bind the port, start the replicas, serve until SIGINT/SIGTERM; the replicas stop with
    the server."""
    if max_replicas is not None and max_replicas < num_replicas:
        raise ConfigError(f"--max-replicas ({max_replicas}) is below --replicas ({num_replicas})")
    sock = bind_socket(host, port)
    if not is_loopback(host) and not opts.api_key:
        logger.warning("serving on %s without --api-key: anyone who can reach it can use it", host)
    init_ray(ray_address, node_ip=ray_node_ip)
    app, _client = build_distributed_app(engine_kwargs, opts, num_replicas, routing_policy,
                                         max_waiting_requests, max_replicas=max_replicas)
    serve_on(app, sock, log_level, opts.shutdown_timeout)
