"""Continuum (the method, METHOD 2): program-level FCFS with pinned programs first, and a
TTL pin on every turn that ends in a tool call.

Waiting order (2.4): preempted > program holds a pin > program's first arrival > request
arrival > id. Victims: latest program arrival first.

On finish (2.2), for a turn that called tool ``f`` with ``n`` tokens of context:
    B    = T * eta + PrefillReload(n)
    tau* = argmax over {0} U S[f] of P(tau, f) * B - tau        (enough history)
    tau  = ln(T + PrefillReload(n)) if that sum > 1 s, else 0  (cold start, < K durations)
A zero TTL frees the blocks at once.
"""
from __future__ import annotations

from continuum.kv_ttl.ttl import cold_start_ttl, solve_ttl
from continuum.request import Request, RequestStatus
from continuum.scheduler.policy import (COLD_START, RELOAD_CHEAP, FinishAction, Policy, free_because,
                                       pin)


class ContinuumPolicy(Policy):
    name = "continuum"

    def bind(self, ctx) -> None:
        super().bind(ctx)
        self._pinned = ctx.pins.pins          # program id -> pin (a plain dict: hot path)

    def waiting_key(self, req: Request) -> tuple:
        return (req.status != RequestStatus.PREEMPTED, req.program_id not in self._pinned,
                req.program_arrival, req.arrival_time, req.seq_no)

    def victim_key(self, req: Request) -> tuple:
        return (req.program_arrival, req.arrival_time, req.seq_no)

    def choose_ttl(self, tool: str | None, context_tokens: int) -> float:
        ctx = self.ctx
        reload = ctx.reload_cost.seconds(context_tokens)
        t = ctx.queue_delay.value
        samples = ctx.predictor.samples(tool)
        if samples is None:
            return cold_start_ttl(t, reload)
        return solve_ttl(samples, t * ctx.eta.value + reload)

    def ttl_after_drift(self, tool: str, context_tokens: int) -> float:
        """The TTL a new pin would get from the reset history (a stale one must not hold)."""
        return self.choose_ttl(tool, context_tokens)

    def on_finish(self, req: Request, now: float) -> FinishAction:
        ttl = self.choose_ttl(req.tool_name, req.num_computed_tokens)
        return pin(ttl) if ttl > 0 else free_because(self.why_no_ttl(req.tool_name, req.num_computed_tokens))

    def why_no_ttl(self, tool: str | None, context_tokens: int) -> str:
        """Why ``choose_ttl`` gave 0 (a ``PIN_DECISIONS`` key)."""
        return COLD_START if self.ctx.predictor.samples(tool) is None else RELOAD_CHEAP
