"""Multi-replica discrete-event simulation: N real Schedulers behind the real Router.

Each replica is one ``Scheduler`` (policy, KV manager, kv_ttl) stepping on a shared virtual
clock with its own "busy until" time; step times come from the cost model, as in
``continuum.sim.simulator``. The ``Router`` (the same object the Ray server uses) places
every turn when the client sends it, and hears about starts, finishes and pins exactly as it
does in the server.

Invariants:
- With one replica this is the single-replica simulator: same submissions at the same times,
  same schedule()/update_from_output() sequence, so identical results (tested).
- Requests routed to a busy replica are added to its scheduler at its next step boundary
  (as the async engine does between steps), never in the middle of a step.
- Same inputs (trace, arrivals, seed, policies, profile, N) give identical results.
"""
from __future__ import annotations

import dataclasses
import heapq
import time
from dataclasses import dataclass, field
from typing import Any

from continuum.bench.replay import ProgramState, TurnRecord, ideal_jct
from continuum.config import CacheConfig, SchedulerConfig
from continuum.distributed.router import Router
from continuum.request import AgentInfo, Request
from continuum.sampling_params import SamplingParams
from continuum.scheduler.scheduler import Scheduler
from continuum.sim.cost_model import CostModel
from continuum.distributed.merge import merge_stats
from continuum.sim.simulator import SIM_TOKEN, SimConfig, _swap_tokens, scheduler_stats

_SUBMIT, _STEP = 0, 1


@dataclass
class _Replica:
    sched: Scheduler
    busy: bool = False
    out: Any = None                              # the SchedulerOutput of the step in progress
    pending: list[Request] = field(default_factory=list)


@dataclass
class MultiSimResult:
    programs: list                               # ProgramRecord
    stats: dict[str, float]                      # per-replica stats summed (+ router_ keys)
    replica_stats: list[dict[str, float]]
    router: dict[str, float]
    wall_seconds: float = 0.0
    sim_seconds: float = 0.0
    num_blocks: int = 0


def _pin_until(sched: Scheduler, program_id: str | None) -> float | None:
    """When the scheduler's pin of this program expires (None: no pin)."""
    pins = getattr(getattr(sched, "agents", None), "pins", None)
    pin = pins.get(program_id) if pins is not None and program_id is not None else None
    return None if pin is None else pin.expires_at


def _make_scheduler(cost: CostModel, cfg: SimConfig, num_blocks: int, max_len: int) -> Scheduler:
    """One replica's scheduler, built exactly as ``continuum.sim.simulator.simulate`` builds
    its own (policy knobs from ``cfg.scheduler``, PrefillReload from the cost model) so that
    one replica reproduces the single-replica simulator."""
    from continuum.sim import simulator as single
    base = getattr(cfg, "scheduler", None) or SchedulerConfig()
    sc = dataclasses.replace(base, policy=cfg.policy, max_num_batched_tokens=cfg.max_num_batched_tokens,
                             max_num_seqs=cfg.max_num_seqs)
    sched = Scheduler(sc, CacheConfig(cfg.block_size, enable_prefix_caching=cfg.enable_prefix_caching),
                      num_blocks, max_len, num_host_blocks=cfg.num_host_blocks)
    install = getattr(single, "_install_reload_cost", None)
    if install is not None:
        install(sched, cost, cfg.max_num_batched_tokens)
    return sched


def simulate_replicas(programs, arrivals: list[float], cost: CostModel, cfg: SimConfig,
                      num_replicas: int, routing: str = "continuum",
                      router_kwargs: dict[str, Any] | None = None) -> MultiSimResult:
    """Replay ``programs`` arriving at ``arrivals`` on ``num_replicas`` simulated replicas."""
    wall0 = time.perf_counter()
    num_blocks = cfg.num_blocks or cost.kv_capacity_tokens(cfg.gpu_memory_utilization) // cfg.block_size
    max_len = min(cfg.max_model_len or cost.profile["model"].get("max_model_len", 131072),
                  num_blocks * cfg.block_size)
    reps = [_Replica(_make_scheduler(cost, cfg, num_blocks, max_len)) for _ in range(num_replicas)]
    router = Router(routing, list(range(num_replicas)), **(router_kwargs or {}))
    states = [ProgramState(p, i, a, cfg.seed, (0, 1 << 30)) for i, (p, a) in enumerate(zip(programs, arrivals))]
    for s in states:
        s.record.ideal = ideal_jct(s.trace, cost, cfg.max_num_batched_tokens, cfg.block_size)
    events: list[tuple[float, int, int, int]] = [(a, i, _SUBMIT, i) for i, a in enumerate(arrivals)]
    heapq.heapify(events)
    seq = len(events)
    live: dict[str, tuple[ProgramState, TurnRecord, int]] = {}

    def push(t: float, kind: int, x: int) -> None:
        nonlocal seq
        heapq.heappush(events, (t, seq, kind, x))
        seq += 1

    def submit(st: ProgramState, t: float) -> None:
        prompt = st.next_prompt()
        turn = st.trace.turns[st.turn]
        rid = f"{st.trace.program_id}#{st.turn}"
        r = router.route(rid, st.trace.program_id, len(prompt), t).replica
        req = Request(rid, prompt, SamplingParams(max_tokens=turn.output_tokens, ignore_eos=True,
                                                  temperature=0.0),
                      t, agent=AgentInfo(st.trace.program_id, st.turn, turn.last, turn.tool),
                      max_model_len=max_len)
        reps[r].pending.append(req)
        rec = TurnRecord(st.trace.program_id, st.turn, t, prompt_tokens=len(prompt))
        st.record.turns.append(rec)
        live[rid] = (st, rec, r)

    def kick(i: int, now: float) -> None:
        """Start replica i's next step at ``now`` if it is idle and has work."""
        rep = reps[i]
        if rep.busy:
            return
        for req in rep.pending:
            rep.sched.add_request(req)
        rep.pending.clear()
        if not rep.sched.has_unfinished():
            return
        out = rep.sched.schedule(now)
        sin, sout = _swap_tokens(out, cfg.block_size)
        if out.is_empty and not (sin or sout):
            return                               # blocked: retried at the next event
        dt = cost.swap_time(sin, sout)
        if not out.is_empty:
            dt += cost.step_time((s.start, s.num_new_tokens) for s in out.scheduled)
        rep.busy, rep.out = True, out
        push(now + dt, _STEP, i)

    def finish_step(i: int, now: float) -> None:
        rep = reps[i]
        out, rep.busy, rep.out = rep.out, False, None
        if out.is_empty:
            return
        sampled = [SIM_TOKEN if s.samples else None for s in out.scheduled]
        finished = rep.sched.update_from_output(out, sampled, now)
        for s in out.scheduled:
            if s.request.first_token_time is not None:
                router.on_start(s.request.request_id)     # idempotent
        for req in finished:
            st, rec, _ = live.pop(req.request_id)
            rec.first_token, rec.finish = req.first_token_time, now
            rec.cached_tokens, rec.output_tokens = max(req.num_cached_tokens, 0), req.num_output_tokens
            rec.preemptions = req.num_preemptions
            last = st.trace.turns[st.turn].last or st.turn + 1 >= len(st.trace.turns)
            router.on_finish(req.request_id, now, output_tokens=req.num_output_tokens,
                             pin_until=_pin_until(rep.sched, st.trace.program_id), last_step=last)
            wait = st.finish_turn(list(req.output_token_ids))
            if wait is None:
                st.record.finish = now
            else:
                push(now + wait, _SUBMIT, st.index)

    now = 0.0
    while events:
        now = events[0][0]
        while events and events[0][0] <= now:
            _, _, kind, x = heapq.heappop(events)
            if kind == _SUBMIT:
                submit(states[x], now)
            else:
                finish_step(x, now)
        for i in range(num_replicas):
            kick(i, now)
        if not events and any(r.sched.has_unfinished() or r.pending for r in reps):
            raise RuntimeError(f"multi-replica simulation wedged at t={now:.3f}")
    per = [scheduler_stats(r.sched) for r in reps]
    for r in reps:
        r.sched.check_integrity()
    snap = router.snapshot()
    return MultiSimResult([s.record for s in states], {**merge_stats(per), **snap}, per, snap,
                          time.perf_counter() - wall0, now, num_blocks)
