"""``DistributedEngineClient``: N engine replicas (Ray actors) behind the ``AsyncLLMEngine``
interface, so ``create_app`` serves them unchanged.

What the app sees: ``start()``, ``shutdown()``, ``add_request``/``generate`` (streams of
``RequestOutput``), ``abort``, ``call(fn)`` (run on every live replica, results merged:
/metrics gets summed stats, per-replica ``replica{i}_*`` keys and ``router_*`` keys),
``check_admission``, ``is_running``, ``num_in_flight``, ``tokenizer``, ``max_model_len`` and
``engine.clock`` (the client's own clock; replicas receive only durations).

Invariants:
- every request is placed by the ``Router`` and reported back to it exactly once as finished
  (normally, aborted or failed); a replica that dies is removed from the router before any
  request sees the error, so no later request is placed on it;
- a request whose replica dies before accepting it is placed again on another replica
  (nothing was computed); one that was already streaming fails with
  ``ReplicaUnavailableError`` (HTTP 503, retry) and the program's next turn is placed afresh
  and recomputes its context;
- a dead replica's actor is killed (never restarted behind the router's back); ``add_replica``
  starts a fresh one under a new index.
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from continuum.config import EngineArgs
from continuum.distributed.merge import merge_results
from continuum.distributed.replica_pool import ReplicaHandle, ReplicaPool, ReplicaUnavailableError
from continuum.distributed.router import NoReplicaError, Router
from continuum.engine.async_engine import AsyncLLMEngine, EngineOverloadedError
from continuum.errors import ContinuumError
from continuum.outputs import RequestOutput
from continuum.request import AgentInfo
from continuum.sampling_params import SamplingParams

logger = logging.getLogger(__name__)


class DistributedEngineClient:
    """See the module docstring. Construct after ``ray.init``; replicas start here."""

    def __init__(self, engine_kwargs: dict[str, Any], num_replicas: int, *,
                 routing_policy: str = "continuum", max_waiting_requests: int | None = None,
                 router_kwargs: dict[str, Any] | None = None, health_interval: float = 1.0,
                 **pool_kwargs: Any):
        if num_replicas < 1:
            raise ContinuumError("--replicas must be at least 1")
        self.clock: Callable[[], float] = time.monotonic      # what serving.submit reads
        self.args = EngineArgs.from_kwargs(**engine_kwargs)   # the server-side knobs the app reads
        self.router = Router(routing_policy, **(router_kwargs or {}))
        self.pool = ReplicaPool(engine_kwargs, max_waiting_requests, **pool_kwargs)
        for h in self.pool.start_sync(num_replicas):
            self.router.add_replica(h.index)
        self.tokenizer = self.pool.tokenizer
        self.max_model_len: int = self.pool.max_model_len
        self.health_interval = health_interval
        self._streams: dict[str, ReplicaStream] = {}
        self._accepting = True
        self._started = False
        self._health: asyncio.Task | None = None

    # -- what the app reads ------------------------------------------------------------------
    @property
    def num_in_flight(self) -> int:
        return len(self._streams)

    @property
    def is_running(self) -> bool:
        return self._started and self._accepting and bool(self.pool.alive())

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        self._health = asyncio.get_running_loop().create_task(self._health_loop())

    async def shutdown(self, timeout: float = 10.0) -> None:
        """Stop accepting, give in-flight requests ``timeout`` s, then stop every replica."""
        self._accepting = False
        deadline = time.monotonic() + timeout
        while self._streams and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for s in list(self._streams.values()):
            s.close()
        if self._health is not None:
            self._health.cancel()
        await self.pool.shutdown(max(deadline - time.monotonic(), 0.5))

    def check_admission(self) -> None:
        if not self._accepting:
            raise EngineOverloadedError("the server is shutting down")
        if not self.pool.alive():
            raise ReplicaUnavailableError("no engine replica is available; retry later")

    # -- requests ----------------------------------------------------------------------------
    def _prompt_len(self, prompt: str | list[int] | dict) -> int:
        if isinstance(prompt, dict):         # vLLM's prompt dict (it carries a cache_salt)
            prompt = prompt.get("prompt_token_ids", prompt.get("prompt", ""))
        if isinstance(prompt, str):
            return len(self.tokenizer.encode(prompt, add_special_tokens=True))
        return len(prompt)

    async def add_request(self, prompt: str | list[int], params: SamplingParams, *,
                          request_id: str | None = None, agent: AgentInfo | None = None,
                          arrival_time: float | None = None) -> "ReplicaStream":
        """Place the request and return once a replica has accepted it (errors raised here)."""
        self.check_admission()
        rid = request_id or uuid.uuid4().hex
        if rid in self._streams:
            raise ContinuumError(f"request id {rid!r} is already in flight")
        program = agent.program_id if agent is not None else None
        n = self._prompt_len(prompt)
        for _attempt in range(len(self.pool.handles) + 1):
            now = self.clock()
            try:
                replica = self.router.route(rid, program, n, now).replica
            except NoReplicaError:
                raise ReplicaUnavailableError("no engine replica is available; retry later") from None
            h = self.pool.handles[replica]
            age = now - arrival_time if arrival_time is not None else 0.0
            gen = h.actor.generate.options(num_returns="streaming").remote(prompt, params, rid, agent, age)
            stream = ReplicaStream(self, h, rid, gen, agent)
            self._streams[rid] = stream
            try:
                kind, _info = await self.pool.next_item(h, gen)
            except ReplicaUnavailableError:
                stream.discard()
                self._replica_failed(h)
                continue                    # nothing was computed: place it elsewhere
            except BaseException as e:
                if not isinstance(e, Exception) and h.alive:
                    h.actor.abort.remote(rid)   # cancelled: the replica may have accepted it
                stream.discard()            # refused (or cancelled) before it was accepted
                raise
            assert kind == "accepted", kind
            return stream
        raise ReplicaUnavailableError("no engine replica could take the request; retry later")

    # add_request, iterate, close: the same protocol as the single engine's.
    generate = AsyncLLMEngine.generate

    async def abort(self, request_id: str) -> None:
        s = self._streams.get(request_id)
        if s is not None:
            s.close()

    async def call(self, fn: Callable[[Any], Any]) -> Any:
        """Run ``fn(engine)`` on every live replica; merged results (see ``merge_results``),
        with the router's numbers added to flat stats."""
        results = await self.pool.call_all(fn, on_dead=self._replica_failed)
        merged = merge_results(results)
        if isinstance(merged, dict) and all(isinstance(k, str) for k in merged):
            if all(isinstance(v, (int, float)) for v in merged.values()):
                merged.update(self.router.snapshot())
        return merged

    # -- replicas ----------------------------------------------------------------------------
    async def add_replica(self) -> int:
        """Start one more replica (e.g. to replace a dead one); returns its index."""
        h = await self.pool.start_one()
        self.router.add_replica(h.index)
        return h.index

    def kill_replica(self, index: int) -> None:
        """Remove a replica now (as if it died): its in-flight requests fail with 503."""
        self._replica_failed(self.pool.handles[index])

    def replicas(self) -> list[dict[str, Any]]:
        rows = []
        for h in self.pool.handles.values():
            rows.append({**h.info, "index": h.index, "alive": h.alive,
                         "in_flight": sum(1 for s in self._streams.values() if s.handle is h),
                         "router_load": self.router.load(h.index) if h.alive else None})
        return rows

    def _replica_failed(self, h: ReplicaHandle) -> None:
        if not self.pool.mark_dead(h):
            return
        lost = self.router.remove_replica(h.index)
        logger.error("replica %d is gone: removed; %d requests in flight on it fail, its "
                     "programs are re-routed", h.index, len(lost))

    def _forget(self, stream: "ReplicaStream", ok: bool) -> None:
        if self._streams.get(stream.request_id) is stream:
            del self._streams[stream.request_id]
        self.router.on_finish(stream.request_id, self.clock(), ok=ok)

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.health_interval)
            try:
                for h in await self.pool.check_health():
                    self._replica_failed(h)
                self.router.gc(self.clock())
            except Exception:                     # noqa: BLE001 - the loop must survive
                logger.exception("replica health check failed")


class ReplicaStream:
    """The outputs of one request on one replica (the ``RequestStream`` interface: async
    iteration, ``finished``, idempotent synchronous ``close()`` that aborts if unfinished)."""

    def __init__(self, client: DistributedEngineClient, handle: ReplicaHandle, request_id: str,
                 gen: Any, agent: AgentInfo | None):
        self.client, self.handle, self.request_id = client, handle, request_id
        self.gen, self.agent = gen, agent
        self.finished = False
        self._started = False
        self._closed = False

    def __aiter__(self) -> AsyncIterator[RequestOutput]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[RequestOutput]:
        c = self.client
        try:
            while not self.finished:
                try:
                    _kind, out, ttl = await c.pool.next_item(self.handle, self.gen)
                except ReplicaUnavailableError:
                    c._replica_failed(self.handle)
                    raise ReplicaUnavailableError(
                        f"engine replica {self.handle.index} failed while serving this request; "
                        "retry it (the program continues on another replica)") from None
                except StopAsyncIteration:
                    raise EngineOverloadedError("request aborted by its replica; retry") from None
                if not self._started:
                    self._started = True
                    c.router.on_start(self.request_id)
                if out.finished:
                    self.finished = True
                    now = c.clock()
                    last = self.agent is not None and self.agent.is_last_step
                    c.router.on_finish(self.request_id, now, output_tokens=len(out.outputs[0].token_ids),
                                       pin_until=None if ttl is None else now + ttl, last_step=last)
                yield out
        finally:
            self.close()

    def __del__(self) -> None:
        # Safety net (as RequestStream): a stream dropped before it was iterated still aborts.
        try:
            self.close()
        except Exception:  # noqa: BLE001 - never raise from a finalizer
            pass

    def discard(self) -> None:
        """Forget a stream its replica never accepted: nothing to abort there, and its
        finalizer must not touch a retried request that reuses the id."""
        if not self._closed:
            self._closed = True
            self.client._forget(self, ok=False)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        c = self.client
        if not self.finished and self.handle.alive:
            self.handle.actor.abort.remote(self.request_id)     # fire and forget: frees its KV
        c._forget(self, ok=self.finished)
