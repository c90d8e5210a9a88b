"""Replay programs against the in-process engine (``--target engine``) in real time.

One LLMEngine per policy run. The loop submits every turn whose send time has come, runs one
engine step when there is work, and otherwise sleeps until the next send. Tool waits are real
(``time.sleep`` while idle), so JCTs are client-visible times on the engine's clock.
Invariant at the end of a run: no request is unfinished and the KV pool has no leaked block
(``LLMEngine.check_integrity``).
"""
from __future__ import annotations

import heapq
import time
from typing import Any

from continuum.bench.replay import ProgramState, TurnRecord, check_fits, ideal_jct
from continuum.request import AgentInfo
from continuum.sampling_params import SamplingParams


def run_engine(programs, arrivals: list[float], engine_kwargs: dict[str, Any], policy: str,
               seed: int = 0, cost=None, progress=None, sample_interval: float = 0.5,
               engine=None) -> dict[str, Any]:
    """Replay on a fresh ``LLMEngine(EngineArgs(**engine_kwargs, scheduling_policy=policy))``.

    ``cost`` (a CostModel, e.g. from ``continuum profile``) fills each program's ideal JCT.
    ``progress`` (a bench.progress.ReplayProgress) hears ``turn_done`` once per finished turn
    and ``tick`` from the loop, so its elapsed time moves while turns run or tools wait.
    Returns {"programs", "stats", "timeline", "num_blocks", "wall_seconds"}.
    """
    from continuum.config import EngineArgs
    from continuum.engine.cache_engine import bytes_per_block
    from continuum.engine.engine import LLMEngine
    from continuum.sim.simulator import pinned_blocks

    if engine is None:
        engine = LLMEngine(EngineArgs.from_kwargs(**{**engine_kwargs, "scheduling_policy": policy}))
    bs = engine.args.block_size
    check_fits(programs, engine.scheduler.kv.pool.num_blocks, bs,
               bytes_per_block(engine.loaded.model, bs, engine.dtype),
               engine.args.max_model_len or engine.loaded.max_model_len)
    vocab = (0, min(engine.vocab_size, 256))     # plain byte ids in the byte tokenizer
    states = [ProgramState(p, i, a, seed, vocab) for i, (p, a) in enumerate(zip(programs, arrivals))]
    sc = engine.args.scheduler_config()
    if cost is not None:
        for s in states:
            s.record.ideal = ideal_jct(s.trace, cost, sc.max_num_batched_tokens, engine.args.block_size)
    events = [(a, i, i) for i, a in enumerate(arrivals)]
    heapq.heapify(events)
    seq = len(events)
    live: dict[str, tuple[ProgramState, TurnRecord]] = {}
    timeline: list[dict[str, float]] = []
    t0 = engine.clock()
    next_sample = 0.0

    def rel() -> float:
        return engine.clock() - t0

    while events or engine.has_unfinished_requests():
        now = rel()
        while events and events[0][0] <= now:
            t, _, i = heapq.heappop(events)
            st = states[i]
            turn = st.trace.turns[st.turn]
            prompt = st.next_prompt()
            rid = f"{st.trace.program_id}#{st.turn}"
            params = SamplingParams(max_tokens=turn.output_tokens, min_tokens=turn.output_tokens,
                                    ignore_eos=True, temperature=0.0)
            # The send time is the event's time (as in the simulator): a send that falls inside
            # a running step waits for it, and that wait counts as queueing.
            engine.add_request(prompt, params, request_id=rid, arrival_time=t0 + t,
                               agent=AgentInfo(st.trace.program_id, st.turn, turn.last, turn.tool))
            rec = TurnRecord(st.trace.program_id, st.turn, t, prompt_tokens=len(prompt))
            st.record.turns.append(rec)
            live[rid] = (st, rec)
        if progress is not None:
            progress.tick()
        if not engine.has_unfinished_requests():
            # Wake at least every second while idle so the progress display's clock moves.
            time.sleep(min(max(0.0, events[0][0] - rel()), 1.0 if progress is not None else float("inf")))
            continue
        if now >= next_sample:
            sch = engine.scheduler
            timeline.append({"t": now, "kv_usage": sch.kv.usage, "running": len(sch.running),
                             "waiting": len(sch.waiting), "pinned_blocks": pinned_blocks(sch)})
            next_sample = now + sample_interval
        for o in engine.step():
            st_rec = live.get(o.request_id)
            if st_rec is None:
                continue
            st, rec = st_rec
            if rec.first_token is None and o.metrics.first_token_time is not None:
                rec.first_token = o.metrics.first_token_time - t0
            if not o.finished:
                continue
            del live[o.request_id]
            rec.finish = o.metrics.finished_time - t0
            rec.cached_tokens = o.num_cached_tokens
            rec.output_tokens = len(o.outputs[0].token_ids)
            rec.preemptions = o.metrics.num_preemptions
            wait = st.finish_turn(list(o.outputs[0].token_ids))
            if progress is not None:
                progress.turn_done(rec.output_tokens)
            if wait is None:
                st.record.finish = rec.finish
            else:
                heapq.heappush(events, (rec.finish + wait, seq, st.index))
                seq += 1
    # The engine may still hold pins (finished programs drop theirs); one empty step lets the
    # scheduler settle before the integrity check.
    engine.step()
    engine.check_integrity()
    return {"programs": [s.record for s in states], "stats": engine.stats(), "timeline": timeline,
            "num_blocks": engine.scheduler.kv.pool.num_blocks, "wall_seconds": rel()}
