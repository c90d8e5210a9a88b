"""The set of replica actors: creation on Ray, liveness, and Ray error translation.

All Ray specifics of the client live here. Errors a caller sees:
- ``ReplicaUnavailableError`` (an ``EngineOverloadedError``, so HTTP 503 + Retry-After) when
  the actor died or cannot be reached;
- the replica's own typed error (validation -> 400, overload -> 503) unwrapped from Ray's
  ``RayTaskError``.
Invariant: ``handles`` keeps every replica ever started under a unique, never reused index;
``alive()`` is the routable subset, and a handle once marked dead never comes back.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

from continuum.distributed.replica import EngineReplica
from continuum.engine.async_engine import EngineOverloadedError

logger = logging.getLogger(__name__)


class ReplicaUnavailableError(EngineOverloadedError):
    """An engine replica died or is unreachable (HTTP 503: retry, another replica serves)."""

    code = "replica_unavailable"     # the OpenAI error body's code (``EngineOverloadedError.code``)


@dataclass
class ReplicaHandle:
    index: int
    actor: Any
    info: dict[str, Any] = field(default_factory=dict)
    alive: bool = True


def _unwrap(e: BaseException) -> BaseException:
    """Translate a Ray exception into what the caller should see."""
    import ray.exceptions as rex
    if isinstance(e, (rex.RayActorError, rex.ActorUnavailableError, rex.WorkerCrashedError,
                      rex.ObjectLostError)):
        return ReplicaUnavailableError(f"engine replica unavailable: {type(e).__name__}")
    if isinstance(e, rex.RayTaskError):
        cause = getattr(e, "cause", None)
        if isinstance(cause, BaseException):
            return cause
    return e


class ReplicaPool:
    def __init__(self, engine_kwargs: dict[str, Any], max_waiting_requests: int | None = None, *,
                 num_gpus_per_replica: float | None = None, num_cpus_per_replica: float | None = None,
                 runtime_env: dict[str, Any] | None = None, ping_timeout: float = 30.0):
        import ray
        if not ray.is_initialized():
            raise RuntimeError("call ray.init() before creating replicas")
        res = ray.cluster_resources()
        # A tensor-parallel replica needs one device per rank: Ray gives the actor N GPUs,
        # visible to it as cuda:0..N-1, which is where its ranks run.
        tp = int(engine_kwargs.get("tensor_parallel_size") or 1)
        gpus = num_gpus_per_replica if num_gpus_per_replica is not None else (float(tp) if res.get("GPU") else 0.0)
        self.engine_kwargs = dict(engine_kwargs)
        self.max_waiting_requests = max_waiting_requests
        self.num_gpus, self.num_cpus = gpus, num_cpus_per_replica
        env = {"env_vars": {"OMP_NUM_THREADS": "1"}}
        if runtime_env:
            env = {**runtime_env, "env_vars": {**env["env_vars"], **runtime_env.get("env_vars", {})}}
        self.runtime_env = env
        self.ping_timeout = ping_timeout
        self.handles: dict[int, ReplicaHandle] = {}
        self._next_index = 0
        self.tokenizer = None
        self.max_model_len = 0

    def alive(self) -> list[ReplicaHandle]:
        return [h for h in self.handles.values() if h.alive]

    # -- creation ------------------------------------------------------------------------------
    def _new_actor(self, num_replicas: int) -> ReplicaHandle:
        import ray
        cpus = self.num_cpus
        if cpus is None:
            # CPU replicas split the cluster's CPUs (never more than one each); GPU ones take 1.
            total = ray.cluster_resources().get("CPU", 1.0)
            cpus = 1.0 if self.num_gpus else min(1.0, total / max(num_replicas, 1))
        cls = ray.remote(EngineReplica).options(num_cpus=cpus, num_gpus=self.num_gpus,
                                                runtime_env=self.runtime_env, max_restarts=0)
        h = ReplicaHandle(self._next_index, cls.remote(self._next_index, self.engine_kwargs,
                                                       self.max_waiting_requests))
        self._next_index += 1
        return h

    def start_sync(self, n: int) -> list[ReplicaHandle]:
        """Start ``n`` replicas and wait until every engine is loaded and running."""
        import ray
        hs = [self._new_actor(n) for _ in range(n)]
        infos = ray.get([h.actor.start.remote() for h in hs])
        for h, info in zip(hs, infos):
            h.info = info
            self.handles[h.index] = h
        self.tokenizer = ray.get(hs[0].actor.tokenizer.remote())
        self.max_model_len = min(i["max_model_len"] for i in infos)
        logger.info("started %d engine replicas: %s", n, infos)
        return hs

    async def start_one(self) -> ReplicaHandle:
        h = self._new_actor(max(len(self.alive()) + 1, 1))
        h.info = await h.actor.start.remote()
        self.handles[h.index] = h
        return h

    # -- liveness ---------------------------------------------------------------------------
    def mark_dead(self, h: ReplicaHandle) -> bool:
        """Mark ``h`` dead and kill its actor; False if it already was."""
        if not h.alive:
            return False
        h.alive = False
        import ray
        try:
            ray.kill(h.actor, no_restart=True)
        except Exception:                          # noqa: BLE001 - already gone is fine
            pass
        return True

    async def _ping(self, h: ReplicaHandle) -> bool:
        try:
            return bool(await asyncio.wait_for(h.actor.ping.remote(), self.ping_timeout))
        except Exception:                          # noqa: BLE001 - any failure is "not alive"
            return False

    async def check_health(self) -> list[ReplicaHandle]:
        """Replicas that did not answer a ping (or whose engine thread stopped)."""
        hs = self.alive()
        ok = await asyncio.gather(*(self._ping(h) for h in hs))
        return [h for h, good in zip(hs, ok) if not good]

    # -- calls --------------------------------------------------------------------------------
    async def next_item(self, h: ReplicaHandle, gen) -> tuple:
        """The next item of a replica's output stream, with Ray errors translated."""
        try:
            ref = await gen.__anext__()
            return await ref
        except StopAsyncIteration:
            raise
        except Exception as e:                     # noqa: BLE001 - translated below
            raise _unwrap(e) from None

    async def call_all(self, fn: Callable, on_dead: Callable[[ReplicaHandle], None]) -> dict[int, Any]:
        hs = self.alive()
        res = await asyncio.gather(*(h.actor.call.remote(fn) for h in hs), return_exceptions=True)
        out: dict[int, Any] = {}
        for h, r in zip(hs, res):
            if isinstance(r, BaseException):
                err = _unwrap(r)
                if isinstance(err, ReplicaUnavailableError):
                    on_dead(h)
                    continue
                raise err
            out[h.index] = r
        return out

    async def shutdown(self, timeout: float) -> None:
        import ray
        hs = self.alive()
        await asyncio.gather(*(asyncio.wait_for(h.actor.shutdown.remote(timeout), timeout + 5)
                               for h in hs), return_exceptions=True)
        for h in hs:
            h.alive = False
            try:
                ray.kill(h.actor, no_restart=True)
            except Exception:                      # noqa: BLE001
                pass
