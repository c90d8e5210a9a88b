"""Replay programs against any OpenAI-compatible server (``--target http://host:port``).

Each program is one asyncio task: wait for its arrival, then per turn POST a streaming
``/v1/completions`` request whose prompt is token ids (context + fresh input), with the output
length forced by ``max_tokens`` + ``min_tokens`` + ``ignore_eos`` (vLLM's sampling
extensions), the agent fields in ``continuum: {program_id, is_last_step, tool_name, turn}``
(ignored by servers that do not know them) and the ``X-Program-Id`` header; wait the tool
duration; repeat. TTFT = first streamed chunk; finish = end of stream (client-side times).
What the client tells about programs is ``ids`` (``IDS``): "all" as above; "tool": no program
id, turn, last-step flag or header, only ``continuum.tool_name`` (``replayer.without_ids``: it
stands for the tool call a server parses from a real model's output), so the server must
recognise the programs (no tool name after a chat turn: a person's think time is no tool
call); "none": no agent field at all, an unmodified client. Each turn's
record keeps the program the server ran it in (``usage.continuum.program_id``).
The next prompt extends the context with the returned output token ids when the server sends
them (``choices[].token_ids``, asked for with vLLM's ``return_token_ids``: continuum and vLLM
>= 0.10.2 do), else with seeded filler ids of the same length: the output part of the prefix
then misses the cache, which is the same for every policy.
"""
from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from continuum.bench.replay import ProgramState, TurnRecord
from continuum.bench.replayer import turn_send, without_ids


async def _model_name(client, base: str) -> str:
    r = await client.get(f"{base}/v1/models")
    r.raise_for_status()
    return r.json()["data"][0]["id"]


IDS = ("all", "tool", "none")


def agent_fields(send, ids: str = "all") -> tuple[dict[str, Any], dict[str, str]]:
    """The ``continuum`` extension object and the headers of a turn's request (module
    docstring; ``ids`` one of ``IDS``)."""
    if ids not in IDS:
        raise ValueError(f"ids must be one of {IDS}, not {ids!r}")
    if ids == "all":
        a = send.agent
        return ({"program_id": a.program_id, "is_last_step": a.is_last_step,
                 "tool_name": a.tool_name, "turn": a.turn}, {"X-Program-Id": a.program_id})
    tool = without_ids(send.agent).tool_name
    return ({"tool_name": tool} if tool is not None and ids == "tool" else {}), {}


async def _turn(client, base: str, model: str, st: ProgramState, t0: float,
                ids: str = "all") -> TurnRecord:
    turn = st.trace.turns[st.turn]
    send = turn_send(st, time.monotonic() - t0)      # the request every target gets
    rec = TurnRecord(st.trace.program_id, st.turn, send.submit, prompt_tokens=len(send.prompt))
    p = send.params
    ext, headers = agent_fields(send, ids)
    body = {"model": model, "prompt": send.prompt, "max_tokens": p.max_tokens,
            "min_tokens": p.min_tokens, "ignore_eos": p.ignore_eos, "temperature": p.temperature,
            "stream": True, "stream_options": {"include_usage": True}, "return_token_ids": True}
    if ext:
        body["continuum"] = ext
    out_ids: list[int] = []
    n_chunks = 0
    async with client.stream("POST", f"{base}/v1/completions", json=body, headers=headers) as r:
        if r.status_code != 200:
            text = (await r.aread()).decode(errors="replace")[:300]
            raise RuntimeError(f"{base} answered {r.status_code}: {text}")
        async for line in r.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            msg = json.loads(data)
            if msg.get("choices"):
                if rec.first_token is None:
                    rec.first_token = time.monotonic() - t0
                n_chunks += 1
                out_ids.extend(msg["choices"][0].get("token_ids") or [])
            usage = msg.get("usage")
            if usage:
                rec.output_tokens = usage.get("completion_tokens", 0)
                details = usage.get("prompt_tokens_details") or {}
                rec.cached_tokens = details.get("cached_tokens") or 0
                rec.program_id_used = (usage.get("continuum") or {}).get("program_id")
    rec.finish = time.monotonic() - t0
    n_out = rec.output_tokens or turn.output_tokens
    rec.output_tokens = n_out
    if len(out_ids) != n_out:
        out_ids = st.filler_output(n_out)
    st.record.turns.append(rec)
    st.finish_turn(out_ids)            # the server's own ids are valid prompt ids for it
    return rec


async def _program(client, base, model, st: ProgramState, t0: float, progress,
                   ids: str) -> None:
    await asyncio.sleep(max(0.0, st.record.arrival - (time.monotonic() - t0)))
    while not st.done:
        wait_after = st.trace.turns[st.turn].tool_duration
        rec = await _turn(client, base, model, st, t0, ids)
        if progress is not None:
            progress.turn_done(rec.output_tokens)
        if st.done:
            st.record.finish = rec.finish
        else:
            await asyncio.sleep(wait_after)


async def _tick(progress) -> None:
    """Redraw the progress display every second (elapsed time) until cancelled."""
    while True:
        progress.tick()
        await asyncio.sleep(1.0)


async def _run(programs, arrivals, base: str, model: str | None, seed: int, vocab_hi: int,
               timeout: float, progress, ids: str) -> dict[str, Any]:
    import httpx

    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        model = model or await _model_name(client, base)
        states = [ProgramState(p, i, a, seed, (0, vocab_hi)) for i, (p, a) in enumerate(zip(programs, arrivals))]
        t0 = time.monotonic()
        ticker = asyncio.create_task(_tick(progress)) if progress is not None else None
        try:
            await asyncio.gather(*(_program(client, base, model, s, t0, progress, ids) for s in states))
        finally:
            if ticker is not None:
                ticker.cancel()
        stats: dict[str, float] = {}
        return {"programs": [s.record for s in states], "stats": stats, "timeline": [],
                "num_blocks": 0, "wall_seconds": time.monotonic() - t0, "model": model}


def run_http(programs, arrivals: list[float], base_url: str, model: str | None = None, seed: int = 0,
             vocab_hi: int = 256, timeout: float = 600.0, progress=None,
             ids: str = "all") -> dict[str, Any]:
    """Replay against ``base_url`` (e.g. http://127.0.0.1:8000). ``vocab_hi`` bounds the prompt
    token ids (256: valid for every tokenizer, and plain bytes for the byte tokenizer);
    ``ids``: what the client tells about programs, "all", "tool" or "none" (module docstring)."""
    if ids not in IDS:
        raise ValueError(f"ids must be one of {IDS}, not {ids!r}")
    return asyncio.run(_run(programs, arrivals, base_url.rstrip("/"), model, seed, vocab_hi, timeout,
                            progress, ids))
