"""The one replay loop: programs' turns sent to an executor, records kept, time advanced.

Every in-process target (the simulator over one scheduler, N simulated replicas behind the
router, the real ``LLMEngine``) replays through ``replay`` with an ``Executor`` of its own.
The replayer owns the client side, identically for all of them:

- program arrivals, and each later turn's send at its previous turn's finish + tool time;
- each turn's request: prompt (``ProgramState``), ``TurnSend.params`` (output length forced
  with max_tokens = min_tokens = the trace's output tokens, ignore_eos, greedy) and the agent
  fields, with the last-turn flag set on the trace's final turn;
- per-turn and per-program records (submit, first token, finish, prompt/cached/output tokens,
  preemptions), the ideal JCT and the KV timeline.

The executor owns time. ``clock()`` is its current time in seconds since the run began;
``advance(next_send)`` moves it forward: a cost-model executor runs its next step on virtual
time (or jumps to ``next_send`` when idle), the engine runs one real step (or sleeps towards
``next_send``). A turn whose send time has come is handed over with its own send time, which
is never later than ``clock()``, so a send that falls inside a running step waits for it and
that wait counts as queueing.

Invariants: turns are sent in (send time, order of becoming due) order, the same on every
executor; a program's turn k+1 is sent only after turn k finished; every record's times are
on the executor's clock. Same inputs and a deterministic executor give identical records.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Callable, Protocol

from continuum.bench.replay import ProgramRecord, ProgramState, TurnRecord
from continuum.bench.trace import ProgramTrace
from continuum.bench.workloads import HUMAN
from continuum.kv_ttl.recognizer import (Attachment, ProgramRecognizer, TokenContinuation,
                                         tokens_answer_key)
from continuum.request import AgentInfo
from continuum.sampling_params import SamplingParams


@dataclass
class TurnSend:
    """One turn's request as the replayer sends it. ``request_id`` is ``<program_id>#<turn>``;
    ``submit`` is the send time on the executor's clock (<= its ``clock()`` when handed over)."""

    request_id: str
    prompt: list[int]
    params: SamplingParams
    agent: AgentInfo
    submit: float

    @property
    def program_id(self) -> str:
        return self.agent.program_id

    @property
    def last(self) -> bool:
        return self.agent.is_last_step


@dataclass
class TurnDone:
    """A finished turn as the executor reports it (times on the executor's clock)."""

    request_id: str
    first_token: float | None
    finish: float
    cached_tokens: int
    output_ids: list[int]
    preemptions: int


class Executor(Protocol):
    """What runs the turns. ``advance`` returns the turns that finished during it."""

    def clock(self) -> float: ...

    def send(self, turn: TurnSend) -> None: ...

    def busy(self) -> bool:
        """A sent turn has not finished yet."""
        ...

    def advance(self, next_send: float | None) -> list[TurnDone]:
        """Move time forward by one step of work, or towards ``next_send`` (None: no more
        sends until a turn finishes) when there is none."""
        ...

    def gauges(self) -> dict[str, float]:
        """The KV timeline's sample now: kv_usage, running, waiting, pinned_blocks."""
        ...


@dataclass
class Replayed:
    programs: list[ProgramRecord]
    timeline: list[dict[str, float]] = field(default_factory=list)
    end: float = 0.0                              # the executor's clock when the last turn ended


def timeline_sample(stats: dict[str, float]) -> dict[str, float]:
    """The KV timeline's sample, read from an engine's or a replica's stats snapshot
    (``continuum.snapshot``)."""
    return {"kv_usage": stats["kv_usage"], "running": stats["num_requests_running"],
            "waiting": stats["num_requests_waiting"], "pinned_blocks": float(stats["pinned_blocks"])}


def turn_send(st: ProgramState, submit: float) -> TurnSend:
    """The request of ``st``'s current turn (draws its fresh prompt tokens)."""
    k = st.turn
    turn = st.trace.turns[k]
    prompt = st.next_prompt()
    last = turn.last or k + 1 == len(st.trace.turns)
    params = SamplingParams(max_tokens=turn.output_tokens, min_tokens=turn.output_tokens,
                            ignore_eos=True, temperature=0.0)
    return TurnSend(f"{st.trace.program_id}#{k}", prompt, params,
                    AgentInfo(st.trace.program_id, k, last, turn.tool), submit)


def without_ids(agent: AgentInfo) -> AgentInfo:
    """What a client that sends no program id tells the target: no id, turn number or
    last-step flag. A tool name stays: it stands for the tool call a server parses from a
    real model's output (a random-weight model's output never holds one); a person's think
    time (the chat workloads' ``human``) is no tool call, so nothing says that a turn follows."""
    return AgentInfo(None, None, False, None if agent.tool_name == HUMAN else agent.tool_name)


def hide_program_id(turn: TurnSend, recognizer: ProgramRecognizer) -> tuple[TurnSend, Attachment]:
    """``turn`` as a client that sends no program id (``without_ids``); the program is the one
    ``recognizer`` recognises from the token prefix."""
    att = recognizer.recognize(turn.prompt, TokenContinuation(turn.prompt), turn.submit)
    agent = without_ids(turn.agent)
    agent.program_id, agent.inferred = att.program_id, att.inferred      # as the server sets them
    return TurnSend(turn.request_id, turn.prompt, turn.params, agent, turn.submit), att


def replay(programs: list[ProgramTrace], arrivals: list[float], executor: Executor, *, seed: int,
           vocab: tuple[int, int], ideal: Callable[[ProgramTrace], float] | None = None,
           progress=None, sample_interval: float | None = None,
           recognizer: ProgramRecognizer | None = None) -> Replayed:
    """Replay ``programs`` arriving at ``arrivals`` (seconds on the executor's clock) on
    ``executor``. Prompt token ids are drawn from ``vocab`` (low, high) per (seed, program).
    ``ideal`` fills each program's ideal JCT; ``progress`` (a bench.progress.ReplayProgress)
    hears ``turn_done`` per finished turn and ``tick`` per loop; with ``sample_interval``
    the executor's gauges are sampled at most that often while it has work. With
    ``recognizer`` the turns are sent without program ids (``hide_program_id``) and each
    finished turn is recorded there, as the server records an id-less client's turns."""
    states = [ProgramState(p, i, a, seed, vocab) for i, (p, a) in enumerate(zip(programs, arrivals))]
    if ideal is not None:
        for s in states:
            s.record.ideal = ideal(s.trace)
    sends: list[tuple[float, int, int]] = [(a, i, i) for i, a in enumerate(arrivals)]
    heapq.heapify(sends)
    seq = len(sends)
    live: dict[str, tuple[ProgramState, TurnRecord]] = {}
    hidden: dict[str, tuple[TurnSend, Attachment]] = {}
    timeline: list[dict[str, float]] = []
    next_sample = 0.0
    while sends or executor.busy():
        now = executor.clock()
        while sends and sends[0][0] <= now:
            t, _, i = heapq.heappop(sends)
            st = states[i]
            turn = turn_send(st, t)
            if recognizer is not None:
                turn, att = hide_program_id(turn, recognizer)
                hidden[turn.request_id] = (turn, att)
            rec = TurnRecord(st.trace.program_id, st.turn, t, prompt_tokens=len(turn.prompt))
            st.record.turns.append(rec)
            live[turn.request_id] = (st, rec)
            executor.send(turn)
        if progress is not None:
            progress.tick()
        if sample_interval is not None and executor.busy() and now >= next_sample:
            timeline.append({"t": now, **executor.gauges()})
            next_sample = now + sample_interval
        for done in executor.advance(sends[0][0] if sends else None):
            st, rec = live.pop(done.request_id)
            if recognizer is not None:
                sent, att = hidden.pop(done.request_id)
                recognizer.record(att, sent.prompt, (len(done.output_ids),),
                                  tokens_answer_key(done.output_ids),
                                  sent.agent.tool_name is not None, done.finish)
                rec.program_id_used = sent.agent.program_id
            rec.first_token, rec.finish = done.first_token, done.finish
            rec.cached_tokens, rec.output_tokens = done.cached_tokens, len(done.output_ids)
            rec.preemptions = done.preemptions
            wait = st.finish_turn(done.output_ids)
            if progress is not None:
                progress.turn_done(rec.output_tokens)
            if wait is None:
                st.record.finish = done.finish
            else:
                heapq.heappush(sends, (done.finish + wait, seq, st.index))
                seq += 1
    return Replayed([s.record for s in states], timeline, executor.clock())
