"""What completions and chat share: model check, prompt budget, submission, SSE, usage,
logprob formats, disconnect handling, per-request metrics."""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from continuum.engine.async_engine import AsyncLLMEngine, RequestStream
from continuum.entrypoints.openai.agent import agent_info
from continuum.entrypoints.openai.errors import OpenAIError, bad_request, to_openai_error
from continuum.entrypoints.openai.metrics import ServerMetrics
from continuum.entrypoints.openai.protocol import SamplingRequest
from continuum.entrypoints.openai.recognition import ProgramInference, ProgramTurn
from continuum.entrypoints.openai.record import TraceRecorder
from continuum.errors import PromptTooLongError
from continuum.outputs import CompletionOutput, RequestOutput
from continuum.request import AgentInfo
from continuum.scheduler.policy import NO_PROGRAM
from continuum.sampling_params import SamplingParams


def sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False, separators=(',', ':'))}\n\n"


SSE_DONE = "data: [DONE]\n\n"


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int,
          final: RequestOutput | None = None, turn: ProgramTurn | None = None) -> dict:
    """OpenAI's usage object; for a turn of an agent program (``final`` decided a pin other
    than ``no_program``) plus ``continuum``: the tool the scheduler saw the turn call, why its
    KV was or was not pinned, and the program it ran in (given or recognised; docs/agent-api.md)."""
    d = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
         "total_tokens": prompt_tokens + completion_tokens,
         "prompt_tokens_details": {"cached_tokens": cached_tokens}}
    if final is not None and final.pin_decision not in (None, NO_PROGRAM):
        d["continuum"] = {"tool_name": final.tool_name, "pin_decision": final.pin_decision,
                          "pin_ttl_seconds": final.pin_ttl,
                          **(turn.usage_fields() if turn is not None else {})}
    return d


class Tracker:
    """Per-request timing for /metrics: TTFT, inter-token gaps, end-to-end latency; with a
    trace recorder, the request's first-output and finish times on the server's clock too
    (``record.TraceRecorder``: a finished request is recorded, any other one dropped)."""

    def __init__(self, metrics: ServerMetrics, endpoint: str, request_id: str | None = None,
                 recorder: TraceRecorder | None = None, clock: Callable[[], float] | None = None):
        self.m, self.endpoint = metrics, endpoint
        self.start = self.last = time.perf_counter()
        self.first = True
        self.finished = False
        self.request_id, self.recorder, self.clock = request_id, recorder, clock
        self.first_at = 0.0                # the first output on ``clock`` (with a recorder)

    def on_output(self, out: RequestOutput) -> None:
        now = time.perf_counter()
        if self.first:
            self.m.ttft.observe(now - self.start)
            self.first = False
            if self.recorder is not None:
                self.first_at = self.clock()
        else:
            self.m.itl.observe(now - self.last)
        self.last = now
        if out.finished:
            self.finished = True
            c = out.outputs[0]
            self.m.e2e.labels(self.endpoint).observe(now - self.start)
            self.m.prompt_tokens.inc(len(out.prompt_token_ids))
            self.m.generation_tokens.inc(len(c.token_ids))
            self.m.cached_tokens.inc(out.num_cached_tokens)
            self.m.finished.labels(c.finish_reason or "unknown").inc()
            if self.recorder is not None:
                if c.finish_reason in ("abort", "error"):
                    self.recorder.drop(out.request_id)
                else:
                    self.recorder.finish(out, self.first_at, self.clock())

    def close(self) -> None:
        """Call when the response ends, however it ends: counts requests cut off early."""
        if not self.finished:
            self.finished = True
            self.m.aborted.inc()
            if self.recorder is not None and self.request_id is not None:
                self.recorder.drop(self.request_id)


class OpenAIServing:
    def __init__(self, engine: AsyncLLMEngine, model_name: str, metrics: ServerMetrics,
                 inference: ProgramInference | None = None, recorder: TraceRecorder | None = None):
        self.engine, self.model_name, self.metrics = engine, model_name, metrics
        self.inference = inference        # None: id-less requests stay programs of one turn
        self.recorder = recorder

    def tracker(self, endpoint: str, stream: RequestStream) -> Tracker:
        """The ``Tracker`` of one submitted request."""
        return Tracker(self.metrics, endpoint, stream.request_id, self.recorder, self.engine.clock)

    @property
    def record_text(self) -> bool:
        """Whether the recorder wants the requests' text (``--record-text``)."""
        return self.recorder is not None and self.recorder.opts.record_text

    def check_model(self, model: str | None) -> None:
        if model is not None and model != self.model_name:
            raise OpenAIError(404, f"the model {model!r} does not exist; this server serves "
                              f"{self.model_name!r}", param="model", code="model_not_found")

    def agent(self, req: SamplingRequest, raw: Request) -> AgentInfo:
        return agent_info(req.model_extra, raw.headers.get("x-program-id"))

    def max_tokens(self, prompt_len: int, requested: int | None, default: int | None = None) -> int:
        """Output budget; a prompt (+ requested output) past max_model_len is a 400. Without a
        request, ``default`` capped at what is left of max_model_len (None: all of it), so a
        default never makes a request fail."""
        limit = self.engine.max_model_len
        if prompt_len >= limit:
            raise PromptTooLongError(prompt_len, limit)
        if requested is None:
            return limit - prompt_len if default is None else min(default, limit - prompt_len)
        if requested < 1:
            raise bad_request(f"max_tokens must be at least 1, got {requested}", "max_tokens")
        if prompt_len + requested > limit:
            raise bad_request(
                f"this model's maximum context length is {limit} tokens, but {prompt_len + requested}"
                f" were requested ({prompt_len} in the prompt, {requested} for the completion)",
                "max_tokens")
        return requested

    async def submit(self, prompt: list[int], params: SamplingParams, rid: str,
                     agent: AgentInfo, cache_salt: str | None = None,
                     text: Any = None) -> RequestStream:
        """Hand the request to the engine; ``text`` (its messages or prompt) is what the trace
        recorder keeps with --record-text."""
        now = self.engine.clock()
        if cache_salt is not None:         # vLLM's prompt dict carries it to LLMEngine
            prompt = {"prompt_token_ids": prompt, "cache_salt": cache_salt}
        stream = await self.engine.add_request(prompt, params, request_id=rid, agent=agent,
                                               arrival_time=now)
        if self.recorder is not None:
            self.recorder.begin(rid, agent, now, text)
        return stream

    @staticmethod
    def new_id(prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex}"


async def merge(streams: list[RequestStream]) -> AsyncIterator[tuple[int, RequestOutput]]:
    """Interleave several request streams as (index, output); closing aborts all of them."""
    if len(streams) == 1:
        try:
            async for out in streams[0]:
                yield 0, out
        finally:
            streams[0].close()
        return
    q: asyncio.Queue = asyncio.Queue()

    async def pump(i: int, s: RequestStream) -> None:
        try:
            async for out in s:
                q.put_nowait((i, out))
            q.put_nowait((i, None))
        except BaseException as e:   # noqa: BLE001 - forwarded to the consumer
            q.put_nowait((i, e))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    try:
        remaining = len(tasks)
        while remaining:
            i, item = await q.get()
            if item is None:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield i, item
    finally:
        for t in tasks:
            t.cancel()
        for s in streams:
            s.close()


CLIENT_CLOSED = 499          # nginx's code: nobody reads it, it only shows in logs/metrics


async def until_disconnect(raw: Request, work: Awaitable[dict],
                           headers: dict[str, str] | None = None) -> Response:
    """Run ``work`` and answer its JSON (with ``headers``); if the client goes away first,
    cancel it (its streams close, so the engine aborts the request and frees its KV) and
    answer 499 to nobody."""
    task = asyncio.ensure_future(work)

    async def listen() -> None:
        while True:
            if (await raw.receive())["type"] == "http.disconnect":
                return

    watcher = asyncio.ensure_future(listen())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        return Response(status_code=CLIENT_CLOSED)
    return JSONResponse(task.result(), headers=headers)


async def sse_stream(chunks: AsyncIterator[str]) -> AsyncIterator[str]:
    """Wrap an SSE generator: an error after the headers went out becomes an error event."""
    try:
        async for c in chunks:
            yield c
    except asyncio.CancelledError:
        raise
    except Exception as e:            # noqa: BLE001 - every failure becomes an error event
        yield sse(to_openai_error(e).body())
    yield SSE_DONE


def completion_logprobs(c: CompletionOutput, start: int, n: int, text_offset: int) -> dict:
    """Legacy completions format for tokens [start:) of the output."""
    toks, lps, tops, offs = [], [], [], []
    off = text_offset
    for tid, entry in zip(c.token_ids[start:], (c.logprobs or [])[start:]):
        lp = entry[tid]
        s = lp.decoded_token or ""
        toks.append(s)
        lps.append(lp.logprob)
        tops.append({(v.decoded_token or ""): v.logprob for t, v in entry.items()
                     if t == tid or (v.rank or 0) <= n})
        offs.append(off)
        off += len(s)
    return {"tokens": toks, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offs}


def chat_logprobs(c: CompletionOutput, start: int, n: int) -> dict:
    """Chat format ``{"content": [{token, logprob, bytes, top_logprobs}]}`` for tokens [start:)."""
    content = []
    for tid, entry in zip(c.token_ids[start:], (c.logprobs or [])[start:]):
        lp = entry[tid]
        tops = sorted((v for v in entry.values() if v.rank is not None and v.rank <= n),
                      key=lambda v: v.rank)[:n]
        tok = lp.decoded_token or ""
        content.append({"token": tok, "logprob": lp.logprob, "bytes": list(tok.encode()),
                        "top_logprobs": [{"token": v.decoded_token or "", "logprob": v.logprob,
                                          "bytes": list((v.decoded_token or "").encode())}
                                         for v in tops]})
    return {"content": content}
