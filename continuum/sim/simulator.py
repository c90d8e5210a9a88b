"""Discrete-event simulation of the engine: the real Scheduler (policy, KV manager, kv_ttl)
with a virtual clock and an executor whose step time comes from the cost model.

The client side (arrivals, turns, records) is ``continuum.bench.replayer.replay``, the loop
every in-process target shares; this module is its executor over one scheduler.

Invariants:
- Scheduling decisions are made by ``continuum.scheduler.Scheduler`` itself; the simulator only
  plays the executor (returns a constant sampled token for each sampling chunk, with
  ignore_eos + max_tokens forcing lengths) and the clients (arrivals, tool waits).
- Virtual time advances by the cost model's step time (+ swap time when the scheduler output
  carries swaps); when nothing can run it jumps to the next arrival or tool return.
- Same inputs (trace, arrivals, seed, policy, profile) give identical results.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from continuum.bench.replay import ideal_jct
from continuum.bench.replayer import TurnDone, TurnSend, replay, timeline_sample
from continuum.config import SchedulerConfig
from continuum.kv_ttl.recognizer import ProgramRecognizer
from continuum.sim.cost_model import CostModel
from continuum.sim.stepper import SimReplica, make_scheduler, sim_capacity, sim_request, turn_done

SIM_VOCAB = (0, 1 << 30)   # prompt token ids: any int (no model reads them)


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
    hide_program_ids: bool = False           # send turns without ids: a ProgramRecognizer on
                                             # the token prefixes assigns them (as the server)


@dataclass
class SimResult:
    programs: list                           # ProgramRecord
    stats: dict[str, float]
    timeline: list[dict[str, float]] = field(default_factory=list)
    wall_seconds: float = 0.0
    sim_seconds: float = 0.0
    num_blocks: int = 0


class SimExecutor:
    """Executor of ``replay``: one scheduler on the cost model's virtual time. A step runs
    whole: turns sent during it join the scheduler when it ends, with their own send times."""

    def __init__(self, replica: SimReplica, max_len: int):
        self.replica, self.max_len = replica, max_len
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def send(self, turn: TurnSend) -> None:
        self.replica.add(sim_request(turn, self.max_len))

    def busy(self) -> bool:
        return self.replica.busy()

    def advance(self, next_send: float | None) -> list[TurnDone]:
        sched = self.replica.sched
        if not sched.has_unfinished():
            self.now = next_send               # not None: the replayer still has sends
            return []
        end = self.replica.start_step(self.now)
        if end is None:
            if next_send is None:
                raise RuntimeError(f"simulation wedged at t={self.now:.3f}: {len(sched.waiting)} waiting, "
                                   f"{len(sched.running)} running, nothing schedulable")
            self.now = max(self.now, next_send)
            return []
        self.now = end
        return [turn_done(req, end) for req in self.replica.end_step(end)[1]]

    def gauges(self) -> dict[str, float]:
        return timeline_sample(self.replica.snapshot())


def simulate(programs, arrivals: list[float], cost: CostModel, cfg: SimConfig,
             progress=None) -> SimResult:
    """Replay ``programs`` (ProgramTrace) arriving at ``arrivals`` through the scheduler.
    ``progress`` (a bench.progress.ReplayProgress) hears ``turn_done`` once per finished turn."""
    wall0 = time.perf_counter()
    num_blocks, max_len = sim_capacity(programs, cost, cfg)
    replica = SimReplica(make_scheduler(cost, cfg, num_blocks, max_len), cost, cfg.block_size)
    r = replay(programs, arrivals, SimExecutor(replica, max_len), seed=cfg.seed, vocab=SIM_VOCAB,
               ideal=lambda t: ideal_jct(t, cost, cfg.max_num_batched_tokens, cfg.block_size),
               progress=progress, sample_interval=cfg.sample_interval,
               recognizer=ProgramRecognizer(block_size=cfg.block_size) if cfg.hide_program_ids else None)
    stats = replica.snapshot()
    replica.sched.check_integrity()
    return SimResult(r.programs, stats, r.timeline, time.perf_counter() - wall0, r.end, num_blocks)
