"""Seeded generators of the scheduling matrix's other workload families (beside the
METHOD-table ones in ``generators.py``): coding-agent sessions, short agent sessions,
human-paced chat, and a mix of agents and chat on one server.

Each family is written from published statistics of real traffic (the numbers in each
docstring); shapes the statistics leave open are ours and say so. Every generator returns
programs with ``arrival_time`` None (the bench draws Poisson arrivals) and is deterministic in
its arguments (numpy PCG64). Program ids carry the family (``code-``, ``short-``, ``chat-``)
so that reports can split a mix by class.

A chat conversation is a program whose "tool" is the human: each turn but the last is followed
by the user's think time under the tool name ``human``, so a scheduler sees a conversation the
way an agent-aware server would (a program id and the pause after each turn).
"""
from __future__ import annotations

import math

import numpy as np

from continuum.bench.trace import ProgramTrace, Turn

HUMAN = "human"


def _fill(rng: np.random.Generator, first: float, outs: np.ndarray, final_context: float) -> list[float]:
    """Per-turn new input tokens (turn 0: ``first``) with lognormal weights scaled so that the
    final context (first + later inputs + all outputs) equals ``final_context`` (at least 1
    token per later turn)."""
    n = len(outs)
    if n == 1:
        return [first]
    w = rng.lognormal(0.0, 1.0, size=n - 1)
    room = max(final_context - first - outs.sum(), float(n - 1))
    return [first] + [max(x, 1.0) for x in w / w.sum() * room]


def _tool_mixture(rng: np.random.Generator, mix: dict[str, tuple[float, float, float]],
                  n: int, clip: float) -> list[tuple[str, float]]:
    """``n`` (tool, duration) draws from {name: (weight, median s, sigma)} lognormals, clipped."""
    names = list(mix)
    p = np.array([mix[k][0] for k in names])
    idx = rng.choice(len(names), size=n, p=p / p.sum())
    z = rng.standard_normal(n)
    out = []
    for i, zi in zip(idx, z):
        _, med, sig = mix[names[i]]
        out.append((names[i], min(med * math.exp(sig * zi), clip)))
    return out


def _program(pid: str, inputs: list[float], outs: np.ndarray, tools: list[tuple[str, float]],
             source: str) -> ProgramTrace:
    n = len(inputs)
    turns = []
    for k in range(n):
        last = k == n - 1
        tool, dur = (None, 0.0) if last else tools[k]
        turns.append(Turn(max(1, int(round(inputs[k]))), max(1, int(round(outs[k]))), tool, dur, last))
    return ProgramTrace(pid, turns, None, source)


# Claude Code / Codex rounds (the measurement): ~10 turns; tool time mean 7 s, sd 8 s,
# max 21 s; final contexts 13k-50k tokens. Tool mix and token shapes are ours: file reads and
# edits take about a second, shell commands and test runs the long tail.
CODING_TOOLS = {"read": (0.32, 0.7, 0.5), "edit": (0.2, 1.3, 0.4), "bash": (0.28, 10.0, 0.7),
                "test": (0.2, 18.0, 0.2)}


def coding_agent(num_programs: int, seed: int = 0) -> list[ProgramTrace]:
    """Coding-agent sessions: turns ~ N(10, 3) in [3, 25], a large first prompt (system prompt,
    tool schemas, repository context: median 8k tokens), tool results as later inputs, final
    context lognormal (median 25k) clipped to [13k, 50k]."""
    rng = np.random.default_rng([seed, 0xC0DE])
    progs = []
    for i in range(num_programs):
        n = int(np.clip(round(rng.normal(10, 3)), 3, 25))
        first = rng.lognormal(math.log(8000), 0.2)
        outs = rng.lognormal(math.log(250), 0.6, size=n)
        final = float(np.clip(rng.lognormal(math.log(25_000), 0.4), 13_000, 50_000))
        tools = _tool_mixture(rng, CODING_TOOLS, n - 1, clip=21.0)
        progs.append(_program(f"code-{i:05d}", _fill(rng, first, outs, final), outs, tools,
                              f"gen:coding-agent seed={seed}"))
    return progs


def short_agent(num_programs: int, seed: int = 0) -> list[ProgramTrace]:
    """Short agent sessions (the issue's measurement: 6 turns, 0.3 s tools): turns ~ N(6, 1)
    in [2, 10], tool times lognormal (median 0.25 s, mean ~0.3 s), contexts of a few thousand
    tokens (first prompt median 1.5k, tool results median 200, outputs median 120: ours)."""
    rng = np.random.default_rng([seed, 0x5407])
    progs = []
    for i in range(num_programs):
        n = int(np.clip(round(rng.normal(6, 1)), 2, 10))
        first = rng.lognormal(math.log(1500), 0.3)
        outs = rng.lognormal(math.log(120), 0.5, size=n)
        inputs = [first] + list(rng.lognormal(math.log(200), 0.8, size=n - 1))
        tools = _tool_mixture(rng, {"call": (1.0, 0.25, 0.6)}, n - 1, clip=5.0)
        progs.append(_program(f"short-{i:05d}", inputs, outs, tools, f"gen:short-agent seed={seed}"))
    return progs


def chat(num_programs: int, seed: int = 0, max_context: int = 125_000) -> list[ProgramTrace]:
    """Human-paced multi-turn chat (the issue's measurement: think time median ~2 min, mean
    ~3.5 min, P90 ~8 min; most conversations one turn, a few over 40; contexts up to 125k).

    Think times: lognormal, median 120 s, sigma 1.06 (mean 210 s, P90 470 s). Turns:
    1 + floor(X), X lognormal(0, 1.5): half the conversations have one turn, 0.7% more than 40
    (capped at 60). Tokens (ours): first message median 600 with a heavy tail (pasted
    documents, sigma 1.6: one in a hundred over 25k tokens), later user messages median 100
    (sigma 1.5), replies median 400.
    A conversation stops early rather than pass ``max_context``."""
    rng = np.random.default_rng([seed, 0xC4A7])
    progs = []
    for i in range(num_programs):
        n = min(1 + int(rng.lognormal(0.0, 1.5)), 60)
        first = min(rng.lognormal(math.log(600), 1.6), max_context / 2)
        outs = rng.lognormal(math.log(400), 0.7, size=n)
        inputs = [first] + list(rng.lognormal(math.log(100), 1.5, size=n - 1))
        ctx, keep = 0.0, 0
        for k in range(n):
            ctx += inputs[k] + outs[k]
            if ctx > max_context:
                break
            keep = k + 1
        keep = max(keep, 1)
        think = rng.lognormal(math.log(120.0), 1.06, size=keep)
        progs.append(_program(f"chat-{i:05d}", inputs[:keep], outs[:keep],
                              [(HUMAN, float(t)) for t in think], f"gen:chat seed={seed}"))
    return progs


def mix(num_programs: int, seed: int = 0, chat_fraction: float = 0.5) -> list[ProgramTrace]:
    """Agents and people on one server: each program is a chat conversation with probability
    ``chat_fraction``, else a coding-agent session (drawn from the two generators above)."""
    rng = np.random.default_rng([seed, 0x313C])
    is_chat = rng.random(num_programs) < chat_fraction
    chats = iter(chat(int(is_chat.sum()), seed))
    agents = iter(coding_agent(int((~is_chat).sum()), seed))
    return [next(chats) if c else next(agents) for c in is_chat]


FAMILIES = {"coding-agent": coding_agent, "short-agent": short_agent, "chat": chat, "mix": mix}


def rescale(programs: list[ProgramTrace], tokens: float = 1.0, time: float = 1.0,
            max_turns: int | None = None) -> list[ProgramTrace]:
    """Copies for a smaller engine (a CPU run): token counts x ``tokens`` (at least 1), tool and
    think times x ``time``, and at most ``max_turns`` turns (the last one kept as the last)."""
    out = []
    for p in programs:
        turns = p.turns[:max_turns] if max_turns else p.turns
        n = len(turns)
        out.append(ProgramTrace(p.program_id, [
            Turn(max(1, round(t.input_tokens * tokens)), max(1, round(t.output_tokens * tokens)),
                 None if k == n - 1 else t.tool, 0.0 if k == n - 1 else t.tool_duration * time, k == n - 1)
            for k, t in enumerate(turns)], p.arrival_time, p.source
            + (f" tokens x{tokens:g}" if tokens != 1 else "") + (f" time x{time:g}" if time != 1 else "")
            + (f" max_turns={max_turns}" if max_turns else "")))
    return out


def program_class(program_id: str) -> str:
    """The family prefix of a generated program id ('code', 'chat', 'swe', ...)."""
    return program_id.split("-", 1)[0]
