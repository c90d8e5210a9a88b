"""InferCept: request FCFS by original arrival, and a min-waste choice for every paused
request, re-evaluated at every step.

A paused request (its turn ended in a tool call) is first preserved (pinned with no TTL).
Each step, with the interception time estimated by the elapsed time ``T_int = now - t_call``,
``C_i`` its context tokens, ``C_other`` the tokens of the running batch:

    Preserve = T_int * C_i               (memory held idle while waiting)
    Discard  = T_fwd(C_i) * (C_i + C_other)   (recompute stalls the batch)
    Swap     = 2 * T_swap(C_i) * C_batch      (copy out and back; C_batch = C_other + C_i)

(all times the per-token memory M, which cancels). Paused requests are visited in order of
decreasing ``min(Preserve, Discard)``; each is swapped if Swap is smaller still and the
per-step link budget (``swap_budget_tokens``) allows, else discarded if Discard < Preserve,
else kept. Without a host tier there is no swap. "Original arrival" is the program's first
arrival: a resumed request keeps its place.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from continuum.errors import ConfigError
from continuum.knobs import knob
from continuum.request import Request, RequestStatus
from continuum.scheduler.policy import FREE, SWAP, FinishAction, Policy, pin


@dataclass(frozen=True)
class InferCeptConfig:
    swap_budget_tokens: int = knob(4096, "infercept policy: tokens that may be swapped out to the "
                                         "host tier per step (the link budget)")

    def __post_init__(self) -> None:
        if self.swap_budget_tokens < 0:
            raise ConfigError("swap_budget_tokens must be >= 0")


class InferCeptPolicy(Policy):
    name = "infercept"
    config_cls = InferCeptConfig

    def __init__(self, config: InferCeptConfig = InferCeptConfig()):
        self.swap_budget_tokens = config.swap_budget_tokens   # read every step (tests change it)

    def waiting_key(self, req: Request) -> tuple:
        return (req.status != RequestStatus.PREEMPTED, req.program_arrival,
                req.arrival_time, req.seq_no)

    def victim_key(self, req: Request) -> tuple:
        return (req.program_arrival, req.arrival_time, req.seq_no)

    def on_finish(self, req: Request, now: float) -> FinishAction:
        return pin(math.inf)              # preserve; T_int = 0 makes it the least waste

    def wastes(self, now: float, created: float, c_i: int, c_other: int) -> tuple[float, float, float]:
        """(preserve, discard, swap) waste of one paused request (docstring formulas)."""
        ctx = self.ctx
        preserve = (now - created) * c_i
        discard = ctx.prefill_cost.seconds(c_i) * (c_i + c_other)
        swap = (2 * ctx.offload_cost.seconds(c_i) * (c_other + c_i)
                if ctx.kv.host is not None else math.inf)
        return preserve, discard, swap

    def on_step(self, now: float) -> list[tuple[str, FinishAction]]:
        ctx = self.ctx
        if not len(ctx.pins):
            return []
        bs = ctx.kv.block_size
        c_other = sum(r.num_computed_tokens for r in ctx.running)
        scored = []
        for p in ctx.pins.pins.values():
            c_i = len(p.block_ids) * bs
            pres, disc, swap = self.wastes(now, p.created, c_i, c_other)
            scored.append((min(pres, disc), pres, disc, swap, c_i, p.program_id))
        scored.sort(key=lambda x: -x[0])
        budget = self.swap_budget_tokens
        decisions = []
        for waste, pres, disc, swap, c_i, pid in scored:
            if swap < waste and c_i <= budget:
                budget -= c_i
                decisions.append((pid, SWAP))
            elif disc < pres:
                decisions.append((pid, FREE))
        return decisions
