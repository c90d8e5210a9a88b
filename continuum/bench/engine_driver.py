"""Replay programs against the in-process engine (``--target engine``) in real time.

One LLMEngine per policy run, driven by ``continuum.bench.replayer.replay`` (the loop the
simulators share) through ``EngineExecutor``. Each loop pass submits every turn whose send
time has come, then runs one engine step when there is work, and otherwise sleeps until the
next send. Tool waits are real (``time.sleep`` while idle), so JCTs are client-visible times
on the engine's clock.
Invariant at the end of a run: no request is unfinished and the KV pool has no leaked block
(``LLMEngine.check_integrity``).
"""
from __future__ import annotations

import time
from typing import Any

from continuum.bench.replay import check_fits, ideal_jct
from continuum.bench.replayer import TurnDone, TurnSend, replay, timeline_sample
from continuum.config import EngineArgs
from continuum.engine.cache_engine import bytes_per_block
from continuum.engine.engine import LLMEngine


class EngineExecutor:
    """Executor of ``replay`` on a real ``LLMEngine``. The clock is the engine's, in seconds
    since this executor was made; a turn sent at ``t`` arrives at that time on it (a send that
    falls inside a running step waits for it, and that wait counts as queueing). While idle
    it sleeps towards the next send, waking at least every ``wake_every`` seconds."""

    def __init__(self, engine: LLMEngine, wake_every: float = float("inf")):
        self.engine, self.wake_every = engine, wake_every
        self.t0 = engine.clock()

    def clock(self) -> float:
        return self.engine.clock() - self.t0

    def send(self, turn: TurnSend) -> None:
        self.engine.add_request(turn.prompt, turn.params, request_id=turn.request_id,
                                arrival_time=self.t0 + turn.submit, agent=turn.agent)

    def busy(self) -> bool:
        return self.engine.has_unfinished_requests()

    def advance(self, next_send: float | None) -> list[TurnDone]:
        if not self.busy():
            time.sleep(min(max(0.0, next_send - self.clock()), self.wake_every))
            return []
        done = []
        for o in self.engine.step():
            if o.finished:
                m = o.metrics
                done.append(TurnDone(o.request_id, None if m.first_token_time is None else m.first_token_time - self.t0,
                                     m.finished_time - self.t0, o.num_cached_tokens,
                                     list(o.outputs[0].token_ids), m.num_preemptions))
        return done

    def gauges(self) -> dict[str, float]:
        return timeline_sample(self.engine.stats())


def run_engine(programs, arrivals: list[float], engine_kwargs: dict[str, Any], policy: str,
               seed: int = 0, cost=None, progress=None, sample_interval: float = 0.5,
               engine: LLMEngine | None = None) -> dict[str, Any]:
    """Replay on a fresh ``LLMEngine(EngineArgs(**engine_kwargs, scheduling_policy=policy))``
    (or on ``engine``, which must have no request in flight).

    ``cost`` (a CostModel, e.g. from ``continuum profile``) fills each program's ideal JCT.
    ``progress`` (a bench.progress.ReplayProgress) hears ``turn_done`` once per finished turn
    and ``tick`` from the loop, so its elapsed time moves while turns run or tools wait.
    Returns {"programs", "stats", "timeline", "num_blocks", "wall_seconds"}.
    """
    if engine is None:
        engine = LLMEngine(EngineArgs.from_kwargs(**{**engine_kwargs, "scheduling_policy": policy}))
    if engine.has_unfinished_requests():
        raise ValueError("run_engine needs an engine with no request in flight")
    bs = engine.args.block_size
    check_fits(programs, engine.scheduler.kv.pool.num_blocks, bs,
               bytes_per_block(engine.loaded.model, bs, engine.dtype),
               engine.args.max_model_len or engine.loaded.max_model_len)
    vocab = (0, min(engine.vocab_size, 256))     # plain byte ids in the byte tokenizer
    chunk = engine.args.scheduler_config().max_num_batched_tokens
    ideal = None if cost is None else (lambda t: ideal_jct(t, cost, chunk, bs))
    # Wake at least every second while idle so the progress display's clock moves.
    ex = EngineExecutor(engine, 1.0 if progress is not None else float("inf"))
    r = replay(programs, arrivals, ex, seed=seed, vocab=vocab, ideal=ideal, progress=progress,
               sample_interval=sample_interval)
    # The engine may still hold pins (finished programs drop theirs); one empty step lets the
    # scheduler settle before the integrity check.
    engine.step()
    engine.check_integrity()
    return {"programs": r.programs, "stats": engine.stats(), "timeline": r.timeline,
            "num_blocks": engine.scheduler.kv.pool.num_blocks, "wall_seconds": ex.clock()}
