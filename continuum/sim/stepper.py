"""One simulated replica: a real ``Scheduler`` whose steps take the cost model's time.

Shared by the single-replica simulator (``continuum.sim.simulator``) and the multi-replica
one (``continuum.distributed.sim_routing``), so both build, feed and step their schedulers
the same way.

Invariants:
- The executor part is trivial: each sampling chunk yields ``SIM_TOKEN``; output lengths are
  forced by the requests' max_tokens (eos is never checked: ignore_eos).
- A step started at ``now`` ends at ``now + step_time + swap_time`` (swap time alone for a
  step that only swaps); requests added while a step runs join the scheduler when it ends.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from continuum.bench.replay import check_fits
from continuum.bench.replayer import TurnDone, TurnSend
from continuum.config import CacheConfig, SchedulerConfig
from continuum.kv_ttl.reload_cost import OffloadCost
from continuum.kv_ttl.step_cost import StepShape, step_cost_snapshot
from continuum.request import Request
from continuum.scheduler.output import SchedulerOutput
from continuum.scheduler.scheduler import Scheduler
from continuum.sim.cost_model import CostModel
from continuum.snapshot import CallTimer, compose

if TYPE_CHECKING:
    from continuum.sim.simulator import SimConfig

SIM_TOKEN = 7          # the executor's sampled token; eos is never checked (ignore_eos)


def sim_capacity(programs, cost: CostModel, cfg: "SimConfig") -> tuple[int, int]:
    """(KV blocks per replica, longest request in tokens) of ``cfg`` on ``cost``'s profile.
    Raises ``KVTooSmallError`` when a turn of ``programs`` cannot run even alone."""
    num_blocks = cfg.num_blocks or cost.kv_capacity_tokens(cfg.gpu_memory_utilization) // cfg.block_size
    model_len = cfg.max_model_len or cost.profile["model"].get("max_model_len", 131072)
    check_fits(programs, num_blocks, cfg.block_size, cost.bytes_per_token * cfg.block_size, model_len)
    return num_blocks, min(model_len, num_blocks * cfg.block_size)


class PrefillReload:
    """PrefillReload(r) of METHOD 2.2 from the simulator's own cost model: the isolated,
    chunked prefill time of n tokens (so the policy's estimate matches the simulated cost)."""

    def __init__(self, cost: CostModel, chunk: int):
        self.cost, self.chunk = cost, chunk

    def seconds(self, num_tokens: int) -> float:
        return self.cost.turn_time(0, max(int(num_tokens), 1), 1, self.chunk)

    # The simulated engine's own cost model: measured by construction, fixed for the run.
    measured = True
    version = 0

    def decode_seconds(self, num_seqs: int, context_tokens: int) -> float:
        return self.cost.shape_time(StepShape(decode_seqs=num_seqs, decode_context=context_tokens))


def make_scheduler(cost: CostModel, cfg: "SimConfig", num_blocks: int, max_len: int) -> Scheduler:
    """A replica's scheduler: ``cfg.scheduler``'s policy knobs with ``cfg``'s policy, token
    budget and max seqs; reload costs (prefill and host offload) from the cost model."""
    sc = dataclasses.replace(cfg.scheduler or SchedulerConfig(), policy=cfg.policy,
                             max_num_batched_tokens=cfg.max_num_batched_tokens, max_num_seqs=cfg.max_num_seqs)
    sched = Scheduler(sc, CacheConfig(cfg.block_size, enable_prefix_caching=cfg.enable_prefix_caching),
                      num_blocks, max_len, num_host_blocks=cfg.num_host_blocks)
    sched.set_reload_cost(prefill=PrefillReload(cost, cfg.max_num_batched_tokens),
                          offload=OffloadCost(bytes_per_token=cost.bytes_per_token, bandwidth=cost.h2d,
                                              latency=cost.swap_latency))
    return sched


def sim_request(turn: TurnSend, max_len: int) -> Request:
    """The scheduler's request for a replayed turn, arriving at its send time."""
    return Request(turn.request_id, turn.prompt, turn.params, turn.submit, agent=turn.agent,
                   max_model_len=max_len)


def turn_done(req: Request, now: float) -> TurnDone:
    """What the replayer records of a request that finished at ``now``."""
    return TurnDone(req.request_id, req.first_token_time, now, max(req.num_cached_tokens, 0),
                    list(req.output_token_ids), req.num_preemptions)


class SimReplica:
    """One scheduler stepping on the cost model. ``out`` is the step in progress (None: idle);
    ``schedule_timer`` holds the wall seconds spent in ``schedule``."""

    def __init__(self, sched: Scheduler, cost: CostModel, block_size: int):
        self.sched, self.cost, self.block_size = sched, cost, block_size
        self.out: SchedulerOutput | None = None
        self.pending: list[Request] = []
        self.schedule_timer = CallTimer("scheduler_time")

    def snapshot(self) -> dict[str, float]:
        """The replica's stats (``continuum.snapshot``): the same keys as ``LLMEngine.stats()``
        (its ``step_cost_*`` are the cost model's, whose step time includes the overhead)."""
        sched = self.sched.snapshot()
        c = self.cost.coef
        return compose(sched, self.schedule_timer.snapshot(), step_cost_snapshot(
            [self.cost.overhead + c[0], c[1], c[2]], sched["steps_total"]))

    @property
    def stepping(self) -> bool:
        return self.out is not None

    def busy(self) -> bool:
        """A step runs, or a request added here has not finished."""
        return self.stepping or bool(self.pending) or self.sched.has_unfinished()

    def add(self, req: Request) -> None:
        """Queue ``req`` now when idle, else when the running step ends (as the async engine
        adds requests between steps)."""
        if self.stepping:
            self.pending.append(req)
        else:
            self.sched.add_request(req)

    def start_step(self, now: float) -> float | None:
        """Schedule a step at ``now``; returns when it ends, or None when nothing can run."""
        assert self.out is None, "a step is already running"
        for req in self.pending:
            self.sched.add_request(req)
        self.pending.clear()
        if not self.sched.has_unfinished():
            return None
        with self.schedule_timer.timed():
            out = self.sched.schedule(now)
        sin, sout = len(out.swap_in) * self.block_size, len(out.swap_out) * self.block_size
        if out.is_empty and not (sin or sout):
            return None
        dt = self.cost.swap_time(sin, sout)
        if not out.is_empty:
            dt += self.cost.step_time((s.start, s.num_new_tokens) for s in out.scheduled)
        self.out = out
        return now + dt

    def end_step(self, now: float) -> tuple[SchedulerOutput, list[Request]]:
        """End the running step at ``now``: its output and the requests it finished."""
        out, self.out = self.out, None
        if out is None:
            raise RuntimeError("end_step without a running step")
        if out.is_empty:
            return out, []
        sampled = [SIM_TOKEN if s.samples else None for s in out.scheduled]
        return out, self.sched.update_from_output(out, sampled, now)
