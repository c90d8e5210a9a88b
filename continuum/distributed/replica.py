"""One engine replica as a Ray actor: an ``AsyncLLMEngine`` in its own worker process.

The actor is asynchronous (all methods run on the actor's event loop, where the engine's
output queues live); the engine itself steps on its own thread as in the one-process server.

Protocol of ``generate`` (a Ray streaming generator):
1. ``("accepted", info)`` once the engine has queued the request (a validation or overload
   error is raised instead, before any output, as ``AsyncLLMEngine.add_request`` does);
2. ``("output", RequestOutput, pin_ttl)`` per engine output; ``pin_ttl`` is set on the final
   output only: seconds left on the program's KV pin on this replica (None: not pinned). It is
   a duration, not a time, because replica and router clocks differ across machines.
Closing the stream early on the client side aborts the request here (``abort``).
"""
from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from continuum.request import AgentInfo
from continuum.sampling_params import SamplingParams

if TYPE_CHECKING:
    from continuum.engine.engine import LLMEngine


def _pin_ttl(engine: LLMEngine, program_id: str) -> float | None:
    """Seconds left on ``program_id``'s pin (read on the engine thread, between steps)."""
    expiry = engine.scheduler.pin_expiry(program_id)
    return None if expiry is None else max(expiry - engine.clock(), 0.0)


class EngineReplica:
    """Ray actor body (wrapped with ``ray.remote`` by ``client.replica_actor_class``)."""

    def __init__(self, index: int, engine_kwargs: dict[str, Any],
                 max_waiting_requests: int | None = None):
        threads = int(os.environ.get("OMP_NUM_THREADS", "1") or 1)
        import torch
        torch.set_num_threads(max(threads, 1))      # replicas share hosts: no thread storms

        from continuum.config import EngineArgs
        from continuum.engine.async_engine import AsyncLLMEngine, freeze_gc_heap
        from continuum.engine.engine import LLMEngine

        self.index = index
        self.llm = LLMEngine(EngineArgs.from_kwargs(**engine_kwargs))
        self.engine = AsyncLLMEngine(self.llm, max_waiting_requests)
        self._live: set[str] = set()           # requests streaming from this actor
        self._aborted: set[str] = set()        # of those, aborted by the client: end quietly
        freeze_gc_heap()                       # the actor process exists for this engine

    async def start(self) -> dict[str, Any]:
        """Start the engine thread (needs the actor's running loop); returns static facts."""
        self.engine.start()
        import socket
        return {"index": self.index, "pid": os.getpid(), "host": socket.gethostname(),
                "max_model_len": self.llm.max_model_len, "device": str(self.llm.device)}

    def tokenizer(self):
        return self.llm.tokenizer

    def ping(self) -> bool:
        return self.engine.is_running

    async def generate(self, prompt: list[int] | str, params: SamplingParams, request_id: str,
                       agent: AgentInfo | None, age: float = 0.0):
        # The client's arrival time is on another clock: keep how long ago it arrived.
        arrival = self.llm.clock() - max(age, 0.0)
        stream = await self.engine.add_request(prompt, params, request_id=request_id, agent=agent,
                                               arrival_time=arrival)
        from continuum.engine.async_engine import EngineOverloadedError
        self._live.add(request_id)
        try:
            yield ("accepted", {"replica": self.index})
            async for out in stream:
                ttl = None
                if out.finished and agent is not None and agent.program_id is not None:
                    pid = agent.program_id
                    ttl = await self.engine.call(lambda e: _pin_ttl(e, pid))
                yield ("output", out, ttl)
        except EngineOverloadedError:
            if request_id not in self._aborted:        # shutdown: the client sees a 503
                raise
        finally:
            self._live.discard(request_id)
            self._aborted.discard(request_id)
            stream.close()                              # aborts the request if unfinished

    async def abort(self, request_id: str) -> None:
        if request_id in self._live:
            self._aborted.add(request_id)
        await self.engine.abort(request_id)

    async def call(self, fn) -> Any:
        return await self.engine.call(fn)

    def num_in_flight(self) -> int:
        return self.engine.num_in_flight

    async def shutdown(self, timeout: float = 10.0) -> None:
        await self.engine.shutdown(timeout)

    def crash(self) -> None:
        """Kill this worker process at once (tests and chaos drills: a replica that dies)."""
        time.sleep(0.01)
        os._exit(1)
