"""Fixed TTL (the authors' preview code; Continuum's ablation 2): program-level FCFS, and
pin for ``fixed_ttl`` (2.0 s) whenever the tool's mean observed duration is <= that TTL.

A tool never seen falls back to the mean over all tools; with no history at all the pin is
made (most tool calls are short, METHOD 1).
"""
from __future__ import annotations

from continuum.request import Request
from continuum.scheduler.policies.program_fcfs import ProgramFCFSPolicy
from continuum.scheduler.policy import TOOL_TOO_SLOW, FinishAction, free_because, pin


class FixedTTLPolicy(ProgramFCFSPolicy):
    name = "fixed-ttl"

    def __init__(self, ttl: float = 2.0):
        self.ttl = ttl

    @classmethod
    def from_config(cls, config) -> "FixedTTLPolicy":
        return cls(config.fixed_ttl)

    def on_finish(self, req: Request, now: float) -> FinishAction:
        mean = self.ctx.predictor.mean(req.tool_name)
        return pin(self.ttl) if mean is None or mean <= self.ttl else free_because(TOOL_TOO_SLOW)
