"""Target-independent replay state: arrivals, per-program token contexts, and records.

Every driver (engine, http, sim) replays programs the same way: turn k's prompt is the
program's context (all earlier prompts and outputs) plus ``input_tokens`` fresh token ids;
output length is forced; after the turn finishes the driver waits ``tool_duration`` and sends
the next turn. Token ids are drawn from a per-program seeded generator, so the same
(trace, seed) gives the same prompts on every target and policy.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from continuum.bench.trace import ProgramTrace


class KVTooSmallError(ValueError):
    """A turn of the trace cannot run even alone on the target: its prompt + output exceed the
    KV cache or the model's context. Raised before anything is replayed."""


def largest_turn(programs: list[ProgramTrace]) -> tuple[str, int, int, int]:
    """(program id, turn index, prompt tokens, output tokens) of the turn whose prompt + output
    is the largest: the KV one request needs at its end (contexts only grow within a program)."""
    best = ("", 0, 0, 0)
    for p in programs:
        ctx = 0
        for k, t in enumerate(p.turns):
            prompt = ctx + t.input_tokens
            if prompt + t.output_tokens > best[2] + best[3]:
                best = (p.program_id, k, prompt, t.output_tokens)
            ctx = prompt + t.output_tokens
    return best


def check_fits(programs: list[ProgramTrace], kv_blocks: int, block_size: int, bytes_per_block: float,
               model_len: int) -> None:
    """Raise ``KVTooSmallError`` naming the largest turn when it cannot run alone: more tokens
    than the model's context (``model_len``), or more KV than ``kv_blocks`` blocks hold (then
    the message gives the blocks and bytes it needs). A turn that does not fit would otherwise
    be cut short at the KV size, and a prompt past it would wait forever."""
    pid, k, prompt, out = largest_turn(programs)
    need = prompt + out
    where = f"program {pid!r} turn {k} needs {need:,} tokens (prompt {prompt:,} + output {out:,})"
    if need > model_len:
        raise KVTooSmallError(f"{where}, more than the model's context of {model_len:,} tokens: "
                              "shorten the trace (e.g. --scale)")
    if need > kv_blocks * block_size:
        blocks = -(-need // block_size)
        raise KVTooSmallError(
            f"{where}, but the KV cache holds {kv_blocks * block_size:,} ({kv_blocks:,} blocks of "
            f"{block_size}): it needs at least {blocks:,} blocks, {blocks * bytes_per_block / 2**20:,.1f} "
            "MiB of KV (--num-blocks, or --kv-cache-memory for the engine)")


def poisson_arrivals(n: int, jps: float, seed: int) -> list[float]:
    """n arrival times of a Poisson process of rate ``jps`` starting at 0 (first at 0)."""
    if jps <= 0:
        raise ValueError("jps must be > 0")
    rng = np.random.default_rng([seed, 0x4A505])
    gaps = rng.exponential(1.0 / jps, size=n)
    gaps[0] = 0.0
    return np.cumsum(gaps).tolist()


def assign_arrivals(programs: list[ProgramTrace], jps: float | None, seed: int) -> list[float]:
    """Poisson arrivals at ``jps``; with jps None, the trace's own arrival times (all required)."""
    if jps is None:
        if any(p.arrival_time is None for p in programs):
            raise ValueError("the trace has programs without arrival_time: give --jps")
        return [float(p.arrival_time) for p in programs]
    return poisson_arrivals(len(programs), jps, seed)


@dataclass
class TurnRecord:
    program_id: str
    turn: int
    submit: float
    first_token: float | None = None
    finish: float | None = None
    prompt_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    preemptions: int = 0
    program_id_used: str | None = None   # the program the target ran it in: the server's (http), or
                                         # the recogniser's when the simulator hid the ids

    @property
    def ttft(self) -> float | None:
        return None if self.first_token is None else self.first_token - self.submit


@dataclass
class ProgramRecord:
    program_id: str
    arrival: float
    finish: float | None = None
    ideal: float | None = None
    turns: list[TurnRecord] = field(default_factory=list)

    @property
    def jct(self) -> float | None:
        return None if self.finish is None else self.finish - self.arrival

    def to_dict(self) -> dict:
        d = asdict(self)
        d["jct"] = self.jct
        return d


class ProgramState:
    """One program being replayed. ``context`` holds every token the next prompt extends."""

    def __init__(self, trace: ProgramTrace, index: int, arrival: float, seed: int,
                 vocab: tuple[int, int]):
        self.trace = trace
        self.index = index
        self.turn = 0
        self.context: list[int] = []
        self.record = ProgramRecord(trace.program_id, arrival)
        self._rng = np.random.default_rng([seed, index, 0x70C])
        self._vocab = vocab

    @property
    def done(self) -> bool:
        return self.turn >= len(self.trace.turns)

    def next_prompt(self) -> list[int]:
        """The current turn's prompt: context + fresh input tokens (appended to the context)."""
        n = self.trace.turns[self.turn].input_tokens
        self.context.extend(self._rng.integers(self._vocab[0], self._vocab[1], size=n).tolist())
        return list(self.context)

    def filler_output(self, n: int) -> list[int]:
        """Stand-in output ids for targets that do not return them (same rng, deterministic)."""
        return self._rng.integers(self._vocab[0], self._vocab[1], size=n).tolist()

    def finish_turn(self, output_ids: list[int]) -> float | None:
        """Record the output in the context and advance. Returns the tool duration before the
        next turn, or None when the program is done."""
        t = self.trace.turns[self.turn]
        self.context.extend(output_ids)
        self.turn += 1
        return None if self.done else t.tool_duration


def ideal_jct(trace: ProgramTrace, cost, chunk: int, block_size: int) -> float:
    """Sum of isolated turn times (every turn hits the previous turn's full KV blocks, as the
    prefix cache would with no contention) + tool durations."""
    t, ctx = 0.0, 0
    for turn in trace.turns:
        prompt = ctx + turn.input_tokens
        # The previous turn's KV covers its prompt + output minus the last sampled token, in
        # full blocks only; at least one prompt token is always computed.
        cached = min((max(ctx - 1, 0) // block_size) * block_size, ((prompt - 1) // block_size) * block_size)
        t += cost.turn_time(cached, prompt - cached, turn.output_tokens, chunk)
        t += turn.tool_duration if not turn.last else 0.0
        ctx = prompt + turn.output_tokens
    return t
