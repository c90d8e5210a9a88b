"""Discrete-event simulation of the engine: the real Scheduler (policy, KV manager, kv_ttl)
with a virtual clock and an executor whose step time comes from the cost model.

Invariants:
- Scheduling decisions are made by ``continuum.scheduler.Scheduler`` itself; the simulator only
  plays the executor (returns a constant sampled token for each sampling chunk, with
  ignore_eos + max_tokens forcing lengths) and the clients (arrivals, tool waits).
- Virtual time advances by the cost model's step time (+ swap time when the scheduler output
  carries swaps); when nothing can run it jumps to the next arrival or tool return.
- Same inputs (trace, arrivals, seed, policy, profile) give identical results.
"""
from __future__ import annotations

import dataclasses
import heapq
import time
import types
from dataclasses import dataclass, field
from typing import Any

from continuum.bench.replay import ProgramState, TurnRecord, check_fits, ideal_jct
from continuum.config import CacheConfig, SchedulerConfig
from continuum.request import AgentInfo, Request
from continuum.sampling_params import SamplingParams
from continuum.scheduler.scheduler import Scheduler
from continuum.sim.cost_model import CostModel

SIM_TOKEN = 7          # the executor's sampled token; eos is never checked (ignore_eos)


@dataclass
class SimConfig:
    policy: str = "vllm"
    block_size: int = 16
    max_num_batched_tokens: int = 2048
    max_num_seqs: int = 128
    num_blocks: int | None = None            # None: the profile's KV capacity
    gpu_memory_utilization: float = 0.9
    enable_prefix_caching: bool = True
    max_model_len: int | None = None         # None: the profile's
    sample_interval: float = 1.0             # seconds of virtual time between timeline samples
    seed: int = 0
    num_host_blocks: int = 0                 # host-memory KV tier (CPU offload); 0 = off
    scheduler: SchedulerConfig | None = None # policy knobs (pin budget, fixed TTL, autellix...);
                                             # its policy, budget and max seqs are overridden


@dataclass
class SimResult:
    programs: list                           # ProgramRecord
    stats: dict[str, float]
    timeline: list[dict[str, float]] = field(default_factory=list)
    wall_seconds: float = 0.0
    sim_seconds: float = 0.0
    num_blocks: int = 0


def scheduler_stats(sched: Scheduler, sched_time: tuple[float, float] = (0.0, 0.0)) -> dict[str, float]:
    """The engine's flat stats dict for a bare scheduler: ``LLMEngine.stats`` reads only
    ``self.scheduler``, so the keys (including those the scheduling policies add) match."""
    from continuum.engine.engine import LLMEngine
    fake = types.SimpleNamespace(scheduler=sched, scheduler_time_total=sched_time[0],
                                 scheduler_time_max=sched_time[1])
    return dict(LLMEngine.stats(fake))


def pinned_blocks(sched: Scheduler) -> float:
    """Blocks held by pins now, if the scheduler exposes them (0 otherwise)."""
    agents = getattr(sched, "agents", None)
    for obj in (getattr(agents, "pins", None), sched, getattr(sched, "pins", None)):
        for attr in ("num_pinned_blocks", "pinned_blocks"):
            v = getattr(obj, attr, None) if obj is not None else None
            if callable(v):
                v = v()
            if isinstance(v, (int, float)):
                return float(v)
    return 0.0


class _PrefillReload:
    """PrefillReload(r) of METHOD 2.2 from the simulator's own cost model: the isolated,
    chunked prefill time of n tokens (so the policy's estimate matches the simulated cost)."""

    def __init__(self, cost: CostModel, chunk: int):
        self.cost, self.chunk = cost, chunk

    def seconds(self, num_tokens: int) -> float:
        return self.cost.turn_time(0, max(int(num_tokens), 1), 1, self.chunk)


def _install_reload_cost(sched: Scheduler, cost: CostModel, chunk: int) -> None:
    set_cost = getattr(sched, "set_reload_cost", None)
    if set_cost is None:
        return
    from continuum.kv_ttl.reload_cost import OffloadCost
    set_cost(prefill=_PrefillReload(cost, chunk),
             offload=OffloadCost(bytes_per_token=cost.bytes_per_token, bandwidth=cost.h2d, latency=cost.swap_latency))


def _swap_tokens(out, block_size: int) -> tuple[int, int]:
    """Tokens swapped in/out by this step (``swap_in``/``swap_out``: (device, host) block pairs)."""
    return len(getattr(out, "swap_in", ()) or ()) * block_size, len(getattr(out, "swap_out", ()) or ()) * block_size


def simulate(programs, arrivals: list[float], cost: CostModel, cfg: SimConfig,
             progress=None) -> SimResult:
    """Replay ``programs`` (ProgramTrace) arriving at ``arrivals`` through the scheduler.
    ``progress`` (a bench.progress.ReplayProgress) hears ``turn_done`` once per finished turn."""
    wall0 = time.perf_counter()
    num_blocks = cfg.num_blocks or cost.kv_capacity_tokens(cfg.gpu_memory_utilization) // cfg.block_size
    model_len = cfg.max_model_len or cost.profile["model"].get("max_model_len", 131072)
    check_fits(programs, num_blocks, cfg.block_size, cost.bytes_per_token * cfg.block_size, model_len)
    max_len = min(model_len, num_blocks * cfg.block_size)
    sc = dataclasses.replace(cfg.scheduler or SchedulerConfig(), policy=cfg.policy,
                             max_num_batched_tokens=cfg.max_num_batched_tokens, max_num_seqs=cfg.max_num_seqs)
    sched = Scheduler(sc, CacheConfig(cfg.block_size, enable_prefix_caching=cfg.enable_prefix_caching),
                      num_blocks, max_len, num_host_blocks=cfg.num_host_blocks)
    _install_reload_cost(sched, cost, cfg.max_num_batched_tokens)
    states = [ProgramState(p, i, a, cfg.seed, (0, 1 << 30)) for i, (p, a) in enumerate(zip(programs, arrivals))]
    for s in states:
        s.record.ideal = ideal_jct(s.trace, cost, cfg.max_num_batched_tokens, cfg.block_size)
    events: list[tuple[float, int, int]] = [(a, i, i) for i, a in enumerate(arrivals)]
    heapq.heapify(events)
    seq = len(events)
    live: dict[str, tuple[ProgramState, Any]] = {}
    timeline: list[dict[str, float]] = []
    now, next_sample, done = 0.0, 0.0, 0
    sched_time = (0.0, 0.0)

    def submit(st: ProgramState, t: float) -> None:
        prompt = st.next_prompt()
        turn = st.trace.turns[st.turn]
        rid = f"{st.trace.program_id}#{st.turn}"
        req = Request(rid, prompt, SamplingParams(max_tokens=turn.output_tokens, ignore_eos=True,
                                                  temperature=0.0),
                      t, agent=AgentInfo(st.trace.program_id, st.turn, turn.last, turn.tool),
                      max_model_len=max_len)
        sched.add_request(req)
        rec = TurnRecord(st.trace.program_id, st.turn, t, prompt_tokens=len(prompt))
        st.record.turns.append(rec)
        live[rid] = (st, rec)

    while events or sched.has_unfinished():
        while events and events[0][0] <= now:
            t, _, i = heapq.heappop(events)
            submit(states[i], t)
        if not sched.has_unfinished():
            now = events[0][0]
            continue
        if now >= next_sample:
            timeline.append({"t": now, "kv_usage": sched.kv.usage, "running": len(sched.running),
                             "waiting": len(sched.waiting), "pinned_blocks": pinned_blocks(sched)})
            next_sample = now + cfg.sample_interval
        ts = time.perf_counter()
        out = sched.schedule(now)
        ts = time.perf_counter() - ts
        sched_time = (sched_time[0] + ts, max(sched_time[1], ts))
        sin, sout = _swap_tokens(out, cfg.block_size)
        if out.is_empty and (sin or sout):
            now += cost.swap_time(sin, sout)
            continue
        if out.is_empty:
            if not events:
                raise RuntimeError(f"simulation wedged at t={now:.3f}: {len(sched.waiting)} waiting, "
                                   f"{len(sched.running)} running, nothing schedulable")
            now = max(now, events[0][0])
            continue
        now += cost.step_time((s.start, s.num_new_tokens) for s in out.scheduled) + cost.swap_time(sin, sout)
        sampled = [SIM_TOKEN if s.samples else None for s in out.scheduled]
        for req in sched.update_from_output(out, sampled, now):
            st, rec = live.pop(req.request_id)
            rec.first_token, rec.finish = req.first_token_time, now
            rec.cached_tokens, rec.output_tokens = max(req.num_cached_tokens, 0), req.num_output_tokens
            rec.preemptions = req.num_preemptions
            wait = st.finish_turn(list(req.output_token_ids))
            if progress is not None:
                progress.turn_done(rec.output_tokens)
            if wait is None:
                st.record.finish = now
                done += 1
            else:
                heapq.heappush(events, (now + wait, seq, st.index))
                seq += 1
    stats = scheduler_stats(sched, sched_time)
    sched.check_integrity()
    return SimResult([s.record for s in states], stats, timeline, time.perf_counter() - wall0, now, num_blocks)
