"""Fixed TTL (the authors' preview code; Continuum's ablation 2): program-level FCFS, and
pin for ``fixed_ttl`` (2.0 s) whenever the tool's mean observed duration is <= that TTL.

A tool never seen falls back to the mean over all tools; with no history at all the pin is
made (most tool calls are short, METHOD 1).
"""
from __future__ import annotations

from dataclasses import dataclass

from continuum.errors import ConfigError
from continuum.knobs import knob
from continuum.request import Request
from continuum.scheduler.policies.program_fcfs import ProgramFCFSPolicy
from continuum.scheduler.policy import TOOL_TOO_SLOW, FinishAction, free_because, pin


@dataclass(frozen=True)
class FixedTTLConfig:
    fixed_ttl: float = knob(2.0, "fixed-ttl policy: TTL in seconds (and the tool-mean bound)")

    def __post_init__(self) -> None:
        if self.fixed_ttl < 0:
            raise ConfigError("fixed_ttl must be >= 0")


class FixedTTLPolicy(ProgramFCFSPolicy):
    name = "fixed-ttl"
    config_cls = FixedTTLConfig

    def __init__(self, config: FixedTTLConfig = FixedTTLConfig()):
        self.ttl = config.fixed_ttl

    def on_finish(self, req: Request, now: float) -> FinishAction:
        mean = self.ctx.predictor.mean(req.tool_name)
        return pin(self.ttl) if mean is None or mean <= self.ttl else free_because(TOOL_TOO_SLOW)
