"""Autellix's PLAS (program-level least attained service), discretised into K queues.

Service and waiting are counted in scheduler steps (one step a request of the program runs
= one unit of service, one step one waits = one unit of waiting), so the policy is
deterministic under the scheduler's injected clock. A program's attained service is the sum
over all its calls, the current one included. The program table keeps both as open
intervals, so no request is visited per step.

- Queue of a program with attained service ``s``: queue i holds ``s`` in
  [sum of quanta 0..i-1, sum of quanta 0..i), quantum_i = base_quantum * 2^i (1, 2, ..., 64
  steps for K = 7); beyond the last bound it stays in queue K-1. Using up a quantum demotes.
- Anti-starvation: a program with ``(W_prog + W_call) / (T_prog + T_call) >= beta`` (total
  waiting over total service) is promoted to queue 0 until its service catches up.

Waiting order: queue, preempted first, request arrival, id. Victims: highest queue, latest
arrival first. Finished turns free their KV. (Autellix also preempts a running request when
a higher-priority one waits; the core here admits only into free memory, so queues act on
admission and preemption order.)
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass

from continuum.errors import ConfigError
from continuum.knobs import knob
from continuum.request import Request, RequestStatus
from continuum.scheduler.policy import Policy


@dataclass(frozen=True)
class AutellixConfig:
    autellix_num_queues: int = knob(7, "autellix policy: number of priority queues (K)")
    autellix_base_quantum: int = knob(1, "autellix policy: decode steps of queue 0 (doubles per queue)")
    autellix_beta: float = knob(8.0, "autellix policy: anti-starvation ratio (waiting / service "
                                     "that promotes to queue 0)")

    def __post_init__(self) -> None:
        if self.autellix_num_queues < 1 or self.autellix_base_quantum < 1 or self.autellix_beta <= 0:
            raise ConfigError("autellix_num_queues and autellix_base_quantum must be >= 1, autellix_beta > 0")


class AutellixPolicy(Policy):
    name = "autellix"
    config_cls = AutellixConfig

    def __init__(self, config: AutellixConfig = AutellixConfig()):
        self.num_queues = config.autellix_num_queues
        self.beta = config.autellix_beta
        self.bounds: list[int] = []          # cumulative quanta: upper bound of each queue
        acc = 0
        for i in range(self.num_queues):
            acc += config.autellix_base_quantum * 2 ** i
            self.bounds.append(acc)

    def queue_of(self, program_id: str) -> int:
        return self._queue(self.ctx.programs.get(program_id))

    def _queue(self, rec) -> int:
        if rec is None:
            return 0
        step = self.ctx.step_no
        s = rec.service_base + rec.num_running * step
        if s and (rec.wait_base + rec.num_waiting * step) / s >= self.beta:
            return 0
        return min(bisect.bisect_right(self.bounds, s), self.num_queues - 1)

    def waiting_key(self, req: Request) -> tuple:
        return (self._queue(req.program_record), req.status != RequestStatus.PREEMPTED,
                req.arrival_time, req.seq_no)

    def victim_key(self, req: Request) -> tuple:
        return (self._queue(req.program_record), req.arrival_time, req.seq_no)
