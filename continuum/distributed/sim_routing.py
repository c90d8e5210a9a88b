"""Multi-replica discrete-event simulation: N real Schedulers behind the real Router.

Each replica is one ``Scheduler`` (policy, KV manager, kv_ttl) stepping on a shared virtual
clock with its own "busy until" time; step times come from the cost model, as in
``continuum.sim.simulator``: both step ``continuum.sim.stepper.SimReplica``s and replay
through ``continuum.bench.replayer.replay``. The ``Router`` (the same object the Ray server
uses) places every turn when the client sends it, and hears about starts, finishes and pins
exactly as it does in the server.

Invariants:
- With one replica this is the single-replica simulator: same submissions at the same times,
  same schedule()/update_from_output() sequence, so identical results (tested).
- Requests routed to a busy replica are added to its scheduler at its next step boundary
  (as the async engine does between steps), never in the middle of a step.
- Same inputs (trace, arrivals, seed, policies, profile, N) give identical results.
"""
from __future__ import annotations

import heapq
import time
from dataclasses import dataclass, field
from typing import Any

from continuum.bench.replay import ideal_jct
from continuum.bench.replayer import TurnDone, TurnSend, replay, timeline_sample
from continuum.distributed.merge import merge_stats
from continuum.distributed.router import Router
from continuum.sim.cost_model import CostModel
from continuum.sim.simulator import SIM_VOCAB, SimConfig
from continuum.sim.stepper import SimReplica, make_scheduler, sim_capacity, sim_request, turn_done


@dataclass
class MultiSimResult:
    programs: list                               # ProgramRecord
    stats: dict[str, float]                      # per-replica stats summed (+ router_ keys)
    replica_stats: list[dict[str, float]]
    router: dict[str, float]
    wall_seconds: float = 0.0
    sim_seconds: float = 0.0
    num_blocks: int = 0
    timeline: list[dict[str, float]] = field(default_factory=list)   # summed over replicas


class RoutedExecutor:
    """Executor of ``replay``: N replicas behind the router on one virtual clock. Time stops
    at every send (the router places a turn when it is sent) and at every step end; after
    each stop, every idle replica with work starts its next step."""

    def __init__(self, replicas: list[SimReplica], router: Router, max_len: int):
        self.replicas, self.router, self.max_len = replicas, router, max_len
        self.now = 0.0
        self._ends: list[tuple[float, int, int]] = []     # (step end, seq, replica) heap
        self._seq = 0

    def clock(self) -> float:
        return self.now

    def send(self, turn: TurnSend) -> None:
        r = self.router.route(turn.request_id, turn.program_id, len(turn.prompt), turn.submit).replica
        self.replicas[r].add(sim_request(turn, self.max_len))

    def busy(self) -> bool:
        return any(rep.busy() for rep in self.replicas)

    def advance(self, next_send: float | None) -> list[TurnDone]:
        for i, rep in enumerate(self.replicas):
            if not rep.stepping:
                end = rep.start_step(self.now)
                if end is not None:
                    heapq.heappush(self._ends, (end, self._seq, i))
                    self._seq += 1
        if not self._ends:
            if next_send is None:
                raise RuntimeError(f"multi-replica simulation wedged at t={self.now:.3f}")
            self.now = next_send
            return []
        if next_send is not None and next_send < self._ends[0][0]:
            self.now = next_send
            return []
        self.now = self._ends[0][0]
        done: list[TurnDone] = []
        while self._ends and self._ends[0][0] <= self.now:
            done += self._end_step(heapq.heappop(self._ends)[2])
        return done

    def _end_step(self, i: int) -> list[TurnDone]:
        """Replica i's step ends now: the router hears of first tokens and finished turns."""
        rep = self.replicas[i]
        out, finished = rep.end_step(self.now)
        for s in out.scheduled:
            if s.request.first_token_time is not None:
                self.router.on_start(s.request.request_id)     # idempotent
        for req in finished:
            self.router.on_finish(req.request_id, self.now, output_tokens=req.num_output_tokens,
                                  pin_until=rep.sched.pin_expiry(req.program_id),
                                  last_step=req.agent.is_last_step)
        return [turn_done(req, self.now) for req in finished]

    def gauges(self) -> dict[str, float]:
        per = [timeline_sample(rep.snapshot()) for rep in self.replicas]
        out = {k: sum(g[k] for g in per) for k in per[0]}
        out["kv_usage"] /= len(per)               # the mean replica's usage
        return out


def simulate_replicas(programs, arrivals: list[float], cost: CostModel, cfg: SimConfig,
                      num_replicas: int, routing: str = "continuum",
                      router_kwargs: dict[str, Any] | None = None, progress=None) -> MultiSimResult:
    """Replay ``programs`` arriving at ``arrivals`` on ``num_replicas`` simulated replicas.
    ``progress`` (a bench.progress.ReplayProgress) hears ``turn_done`` once per finished turn."""
    wall0 = time.perf_counter()
    num_blocks, max_len = sim_capacity(programs, cost, cfg)
    reps = [SimReplica(make_scheduler(cost, cfg, num_blocks, max_len), cost, cfg.block_size)
            for _ in range(num_replicas)]
    router = Router(routing, list(range(num_replicas)), **(router_kwargs or {}))
    r = replay(programs, arrivals, RoutedExecutor(reps, router, max_len), seed=cfg.seed, vocab=SIM_VOCAB,
               ideal=lambda t: ideal_jct(t, cost, cfg.max_num_batched_tokens, cfg.block_size),
               progress=progress, sample_interval=cfg.sample_interval)
    per = [rep.snapshot() for rep in reps]
    for rep in reps:
        rep.sched.check_integrity()
    snap = router.snapshot()
    return MultiSimResult(r.programs, {**merge_stats(per), **snap}, per, snap,
                          time.perf_counter() - wall0, r.end, num_blocks, r.timeline)
