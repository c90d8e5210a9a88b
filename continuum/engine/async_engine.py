"""An asyncio front for the synchronous ``LLMEngine``.

One background thread owns the engine exclusively: every engine call (add, abort, step,
stats, integrity check) happens on it, so the engine needs no locks. The event loop talks to
it through a thread-safe inbox; outputs come back in one ``call_soon_threadsafe`` per step and
are routed to per-request ``asyncio.Queue``s. torch releases the GIL inside its kernels, so the
event loop stays responsive while a step runs.

Invariants:
- a request id is in ``_streams`` from ``generate()``'s start until its consumer stops; a
  consumer that stops before the final output (client gone, cancelled, error) always sends an
  abort, and the engine frees the request's KV at once when it handles it;
- the inbox is FIFO, so an abort is always handled after the add it follows;
- admission control counts requests not yet admitted by the scheduler (inbox + engine waiting
  queue); over ``max_waiting_requests`` a new request gets ``EngineOverloadedError`` at once;
- a request the engine fails alone (``RequestOutput.error``) gets ``RequestFailedError`` on its
  stream and the others run on; only an error that escapes ``step()`` kills the engine
  (``EngineDeadError`` for everyone).
"""
from __future__ import annotations

import asyncio
import gc
import logging
import queue
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from continuum.engine.engine import LLMEngine
from continuum.errors import ContinuumError
from continuum.outputs import RequestOutput
from continuum.request import AgentInfo
from continuum.sampling_params import SamplingParams

logger = logging.getLogger(__name__)

# Inbox commands the engine thread handles between two steps while requests are running.
MAX_COMMANDS_PER_STEP = 16


def freeze_gc_heap() -> None:
    """Call once a serving process has built its engine: collect, then move every live object
    (torch and transformers modules, the tokenizer, the model, one object per KV block: ~350k
    objects for a small model) into the GC's permanent generation. Otherwise each full
    collection, which request garbage triggers from time to time, traverses them all and
    stalls the engine thread (and every stream) for ~150 ms here. Only for processes whose
    engine lives until exit: cyclic garbage of frozen objects is never collected."""
    gc.collect()
    gc.freeze()


class EngineOverloadedError(ContinuumError):
    """The waiting queue is full or the server is shutting down (HTTP 503, retry later).
    ``code`` is the OpenAI error body's ``code`` (subclasses name their own cause)."""

    code: str = "overloaded"


class EngineDeadError(ContinuumError):
    """The engine thread crashed; the server cannot serve (HTTP 500)."""


class RequestFailedError(ContinuumError):
    """The engine failed this one request (the others run on); HTTP 500. The message a client
    sees is generic; the cause is in the server log."""


class _Aborted:
    """Stream sentinel: the request was aborted by the engine side (shutdown)."""


def _resolve(fut: asyncio.Future, value: Any = None, exc: BaseException | None = None) -> None:
    if fut.done():                      # the awaiting coroutine was cancelled meanwhile
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(value)


class AsyncLLMEngine:
    """``await``-able streaming access to one ``LLMEngine`` (see module docstring)."""

    def __init__(self, engine: LLMEngine, max_waiting_requests: int | None = None):
        self.engine = engine
        self.max_waiting_requests = max_waiting_requests
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._streams: dict[str, asyncio.Queue] = {}
        self._lock = threading.Lock()      # guards the two admission counters below
        self._pending_adds = 0             # adds in the inbox, not yet handed to the engine
        self._engine_waiting = 0           # engine's waiting queue after the last step
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._accepting = True
        self.dead: BaseException | None = None

    # -- properties the server reads (immutable after construction) -------------------------
    @property
    def tokenizer(self):
        return self.engine.tokenizer

    @property
    def args(self):
        """The engine's ``EngineArgs`` (the server reads its server-side knobs)."""
        return self.engine.args

    @property
    def clock(self):
        """The engine's clock (arrival times are read from it)."""
        return self.engine.clock

    @property
    def max_model_len(self) -> int:
        return self.engine.max_model_len

    @property
    def num_in_flight(self) -> int:
        return len(self._streams)

    @property
    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self.dead is None

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the engine thread; call from the event loop that will consume outputs."""
        if self._thread is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="continuum-engine", daemon=True)
        self._thread.start()

    async def shutdown(self, timeout: float = 10.0) -> None:
        """Stop accepting, let in-flight requests finish for up to ``timeout`` s, abort the
        rest (freeing their KV), then stop the thread."""
        self._accepting = False
        deadline = time.monotonic() + timeout
        while self._streams and time.monotonic() < deadline and self.is_running:
            await asyncio.sleep(0.05)
        for rid in list(self._streams):
            self._inbox.put(("abort", rid, True))
        self._inbox.put(("stop",))
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 30.0)

    # -- requests -------------------------------------------------------------------------------
    def check_admission(self) -> None:
        """Raise if a new request would be refused now (503 before any work is done)."""
        if self.dead is not None:
            raise EngineDeadError("the engine has stopped after an internal error")
        if not self._accepting:
            raise EngineOverloadedError("the server is shutting down")
        if self.max_waiting_requests is not None:
            with self._lock:
                waiting = self._pending_adds + self._engine_waiting
            if waiting >= self.max_waiting_requests:
                raise EngineOverloadedError(
                    f"too many waiting requests ({waiting} >= --max-waiting-requests "
                    f"{self.max_waiting_requests}); retry later")

    async def add_request(self, prompt: str | list[int], params: SamplingParams, *,
                          request_id: str | None = None, agent: AgentInfo | None = None,
                          arrival_time: float | None = None) -> "RequestStream":
        """Queue a request; returns once the engine has accepted it (typed validation errors
        are raised here, before any output). Iterate the returned stream for outputs; close
        it (or stop iterating) before the end and the request is aborted."""
        self.check_admission()
        assert self._loop is not None, "start() the engine first"
        rid = request_id or uuid.uuid4().hex
        if rid in self._streams:
            raise ContinuumError(f"request id {rid!r} is already in flight")
        stream = RequestStream(self, rid)
        added = self._loop.create_future()
        self._streams[rid] = stream.queue
        with self._lock:
            self._pending_adds += 1
        self._inbox.put(("add", rid, prompt, params, agent, arrival_time, added))
        try:
            await added
        except BaseException:
            stream.close()
            raise
        return stream

    async def generate(self, prompt: str | list[int], params: SamplingParams, *,
                       request_id: str | None = None, agent: AgentInfo | None = None,
                       arrival_time: float | None = None) -> AsyncIterator[RequestOutput]:
        """``add_request`` and iterate, in one async generator."""
        stream = await self.add_request(prompt, params, request_id=request_id, agent=agent,
                                        arrival_time=arrival_time)
        try:
            async for out in stream:
                yield out
        finally:
            stream.close()

    async def abort(self, request_id: str) -> None:
        """Abort a request by id (no-op when unknown or finished)."""
        self._inbox.put(("abort", request_id, True))

    async def call(self, fn: Callable[[LLMEngine], Any]) -> Any:
        """Run ``fn(engine)`` on the engine thread between steps and return its result."""
        if not self.is_running:
            raise EngineDeadError("the engine is not running")
        fut = asyncio.get_running_loop().create_future()
        self._inbox.put(("call", fn, fut))
        return await fut

    # -- the engine thread -----------------------------------------------------------------
    def _post(self, fn: Callable, *args) -> None:
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:            # event loop closed: nobody is listening any more
            pass

    def _deliver(self, outputs: list[RequestOutput]) -> None:
        for out in outputs:
            stream = self._streams.get(out.request_id)
            if stream is not None:
                stream.put_nowait(out if out.error is None else RequestFailedError(
                    "the engine failed this request (internal error); other requests were not "
                    "affected"))

    def _push(self, rid: str, item: Any) -> None:
        stream = self._streams.get(rid)
        if stream is not None:
            stream.put_nowait(item)

    def _handle(self, cmd: tuple) -> bool:
        """Apply one inbox command; False means stop."""
        eng, kind = self.engine, cmd[0]
        if kind == "add":
            _, rid, prompt, params, agent, arrival, fut = cmd
            with self._lock:
                self._pending_adds -= 1
            try:
                eng.add_request(prompt, params, request_id=rid, agent=agent, arrival_time=arrival)
            except Exception as e:           # typed validation errors go back to the caller
                self._post(_resolve, fut, None, e)
            else:
                self._post(_resolve, fut, rid)
        elif kind == "abort":
            _, rid, notify = cmd
            eng.abort_request(rid)
            if notify:
                self._post(self._push, rid, _Aborted)
        elif kind == "call":
            _, fn, fut = cmd
            try:
                self._post(_resolve, fut, fn(eng))
            except Exception as e:
                self._post(_resolve, fut, None, e)
        elif kind == "stop":
            return False
        return True

    def _run(self) -> None:
        eng = self.engine
        try:
            while True:
                # Block only when idle; otherwise take what has arrived and keep stepping, but
                # at most MAX_COMMANDS_PER_STEP commands between two steps: a flood of them
                # (metrics scrapes, adds) must not stall the requests that are running.
                try:
                    cmd = self._inbox.get(timeout=0.5) if not eng.has_unfinished_requests() \
                        else self._inbox.get_nowait()
                    if not self._handle(cmd):
                        return
                    for _ in range(MAX_COMMANDS_PER_STEP - 1):
                        if not self._handle(self._inbox.get_nowait()):
                            return
                except queue.Empty:
                    pass
                if eng.has_unfinished_requests():
                    outputs = eng.step()
                    if outputs:
                        self._post(self._deliver, outputs)
                    else:
                        time.sleep(0.0005)   # nothing to emit (prefill chunk / blocked): let others run
                with self._lock:
                    self._engine_waiting = eng.num_waiting_requests
        except BaseException as e:           # an engine bug: fail every request, never hang them
            logger.exception("engine thread crashed")
            self.dead = e
            err = EngineDeadError("the engine stopped after an internal error")
            self._post(self._fail_all, err)
            self._fail_inbox(err)

    def _fail_all(self, err: BaseException) -> None:
        for stream in self._streams.values():
            stream.put_nowait(err)

    def _fail_inbox(self, err: BaseException) -> None:
        while True:
            try:
                cmd = self._inbox.get_nowait()
            except queue.Empty:
                return
            if cmd[0] in ("add", "call"):
                self._post(_resolve, cmd[-1], None, err)


class RequestStream:
    """The outputs of one accepted request. ``close()`` is idempotent and synchronous (safe in
    ``finally`` blocks of cancelled tasks); closing before the final output aborts."""

    def __init__(self, engine: AsyncLLMEngine, request_id: str):
        self.request_id = request_id
        self.queue: asyncio.Queue = asyncio.Queue()
        self.finished = False
        self._engine = engine
        self._closed = False

    def __aiter__(self) -> AsyncIterator[RequestOutput]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[RequestOutput]:
        try:
            while not self.finished:
                item = await self.queue.get()
                if isinstance(item, BaseException):
                    raise item
                if item is _Aborted:
                    self.finished = True
                    raise EngineOverloadedError("request aborted by the server (shutting down)")
                self.finished = item.finished
                yield item
        finally:
            self.close()

    def __del__(self) -> None:
        # Safety net: a stream dropped unclosed (e.g. a response cancelled before it started
        # iterating) still aborts its request.
        try:
            self.close()
        except Exception:  # noqa: BLE001 - never raise from a finalizer
            pass

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        eng = self._engine
        eng._streams.pop(self.request_id, None)
        if not self.finished:
            eng._inbox.put(("abort", self.request_id, False))
