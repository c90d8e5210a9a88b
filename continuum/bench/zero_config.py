"""Zero-config programs measured: generated conversations replayed over HTTP with the official
``openai`` client sending **no** program id, scored against the traces' true programs.

Each program of a seeded trace (``workloads.py`` families) becomes a real chat conversation:
a system prompt (``shared_system``: one text for every program, the case recognition must
not merge), a first user message of the turn's ``input_tokens`` characters of seeded random
words (the random models' byte tokenizer: one token per character), then per turn the
server's answer appended as the assistant message exactly as the client received it and the
next input as a ``tool`` message (agent turns, with the tool schemas on every request) or a
``user`` message (chat turns, tool ``human``). Tool and think times are slept, scaled by
``time_scale``. A conversation stops early (``turns_cut``) rather than pass the model's
context. Programs run concurrently (at most ``concurrency`` at once), so turns of different
programs interleave as on a busy server.

Scoring, from ``usage.continuum.program_id`` of every response:
- a turn is *right* when its program id is the one its program's first turn got and no other
  trace program ever got that id (a first turn is right when it started a program of its own);
- a *merge* is a program id given to turns of two or more trace programs;
- a *split* is a trace program whose turns got more than one id.
"""
from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from continuum.bench.trace import ProgramTrace
from continuum.bench.workloads import HUMAN

TOOLS = [{"type": "function", "function": {
    "name": "bash", "description": "run a shell command",
    "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}}}}]
_WORDS = ("the", "file", "test", "error", "line", "function", "value", "return", "class",
          "import", "module", "config", "path", "server", "request", "output", "input", "data",
          "list", "check", "fix", "run", "build", "user", "model", "cache", "token", "block")
TEMPLATE_SLACK = 48          # tokens the chat template adds around two new messages, at most


def words(rng: np.random.Generator, n_chars: int) -> str:
    """Seeded filler text of about ``n_chars`` characters (at least one word), with a random
    number every few words so that two programs never write the same message."""
    out, size = [], 0
    while size < max(n_chars, 1):
        w = _WORDS[rng.integers(len(_WORDS))] if rng.random() < 0.8 else str(rng.integers(10**6))
        out.append(w)
        size += len(w) + 1
    return " ".join(out)[:max(n_chars, 1)]


@dataclass
class TurnResult:
    program: str                 # the trace's program id (never sent)
    turn: int
    program_id: str | None       # the id the server used (usage.continuum.program_id)
    inferred: bool | None
    attached: bool | None
    prompt_tokens: int
    cached_tokens: int


async def replay_program(client: Any, model: str, trace: ProgramTrace, system: str | None,
                         seed: int, max_model_len: int, time_scale: float,
                         results: list[TurnResult], cut: list[str]) -> None:
    """One conversation, turn after turn (see the module docstring)."""
    rng = np.random.default_rng([seed, int.from_bytes(trace.program_id.encode()[-8:], "little")])
    is_agent = any(t.tool not in (None, HUMAN) for t in trace.turns)
    messages: list[dict] = [{"role": "system", "content": system}] if system else []
    context = 0
    for k, turn in enumerate(trace.turns):
        role = "user" if k == 0 or trace.turns[k - 1].tool in (None, HUMAN) else "tool"
        text = words(rng, turn.input_tokens)
        if context + len(text) + turn.output_tokens + TEMPLATE_SLACK > max_model_len:
            cut.append(trace.program_id)
            return
        messages.append({"role": role, "content": text})
        r = await client.chat.completions.create(
            model=model, messages=messages, max_tokens=turn.output_tokens,
            **({"tools": TOOLS} if is_agent else {}))
        c = (r.usage.model_extra or {}).get("continuum") or {}
        details = r.usage.prompt_tokens_details
        results.append(TurnResult(trace.program_id, k, c.get("program_id"), c.get("program_inferred"),
                                  c.get("program_attached"), r.usage.prompt_tokens,
                                  details.cached_tokens if details else 0))
        msg = r.choices[0].message
        answer: dict = {"role": "assistant", "content": msg.content}
        if msg.tool_calls:
            answer["tool_calls"] = [tc.model_dump() for tc in msg.tool_calls]
        messages.append(answer)
        context = r.usage.prompt_tokens + r.usage.completion_tokens
        if turn.tool_duration and time_scale:
            await asyncio.sleep(turn.tool_duration * time_scale)


async def replay(base_url: str, model: str, programs: list[ProgramTrace], *,
                 shared_system: str | None, seed: int = 0, max_model_len: int = 2048,
                 time_scale: float = 0.0, concurrency: int = 16,
                 api_key: str = "unused") -> tuple[list[TurnResult], list[str], float]:
    """Replay every program with no id; returns (turn results, programs cut short, seconds)."""
    import openai

    client = openai.AsyncOpenAI(base_url=base_url + "/v1", api_key=api_key, max_retries=0,
                                timeout=600)
    results: list[TurnResult] = []
    cut: list[str] = []
    gate = asyncio.Semaphore(concurrency)

    async def one(p: ProgramTrace) -> None:
        async with gate:
            await replay_program(client, model, p, shared_system, seed, max_model_len, time_scale,
                                 results, cut)

    t0 = time.perf_counter()
    try:
        await asyncio.gather(*(one(p) for p in programs))
    finally:
        await client.close()
    return results, cut, time.perf_counter() - t0


def score(results: list[TurnResult]) -> dict[str, Any]:
    """Right turns, merges and splits (module docstring)."""
    by_program: dict[str, list[TurnResult]] = defaultdict(list)
    owners: dict[str | None, set[str]] = defaultdict(set)
    for r in results:
        by_program[r.program].append(r)
        owners[r.program_id].add(r.program)
    right = right_continuations = continuations = 0
    splits = 0
    for prog, turns in by_program.items():
        turns.sort(key=lambda r: r.turn)
        first = turns[0].program_id
        own = first is not None and owners[first] == {prog}
        splits += len({t.program_id for t in turns}) > 1
        for t in turns:
            ok = own and t.program_id == first
            right += ok
            if t.turn > 0:
                continuations += 1
                right_continuations += ok
    merges = [sorted(progs) for pid, progs in owners.items() if pid is not None and len(progs) > 1]
    n = len(results)
    return {"programs": len(by_program), "turns": n, "continuation_turns": continuations,
            "turns_right": right, "accuracy": right / n if n else None,
            "continuations_right": right_continuations,
            "continuation_accuracy": right_continuations / continuations if continuations else None,
            "merges": len(merges), "merged_programs": sum(len(m) for m in merges),
            "merge_examples": merges[:5], "splits": splits,
            "turns_without_program_id": sum(r.program_id is None for r in results),
            "program_ids": len({r.program_id for r in results}),
            "cached_token_fraction": (sum(r.cached_tokens for r in results)
                                      / max(sum(r.prompt_tokens for r in results), 1))}


def as_rows(results: list[TurnResult]) -> list[dict[str, Any]]:
    return [asdict(r) for r in results]
