"""continuum+ (ours, the default): agent-aware where it pays, vLLM everywhere else.

Every mechanism is a bet measured online, and each one stays off where it cannot win:

- **Order**: vLLM's (preempted first, then request arrival; the latest arrival is the
  preemption victim), except that a request whose program holds a pin goes first: that is
  the pin's payoff. No program-level precedence, so a newcomer never waits behind older
  programs' later turns (Continuum's program FCFS cost 3-8x on turn-TTFT P99 past the cliff;
  preempting by program age doubled preemptions below it).
- **Pins** (METHOD 2.2's TTL, three changes): a call that returns within the prefix cache's
  eviction horizon H (``kv_ttl/eviction.py``) finds its KV without a pin, so only the calls
  between H and tau count as won, ``(P(tau) - P(H)) * B - price * tau``: below the cliff H is
  minutes and nothing is pinned. A pin is priced by the memory it holds: its share of the
  blocks, at least one batch slot (``1 / max_num_seqs``), per second, where the paper charges
  one second per second whatever its size. And a program that computes under 1/``DUTY`` of the
  time (a person thinking between chat turns) is never pinned.
- **The door** (``scheduler/admission.py``): new programs wait while the active programs'
  working set (the most KV they are expected to hold at once over the turns ahead) would not
  fit, only while the cache is under pressure (H below a gate, with hysteresis; with a host
  tier the H of device + host, since a return within it only reloads), for at most 2.5
  *rounds* (the time one turn of every program in the system takes from a cold cache: vllm's
  wait once it thrashes), or 1.25 rounds of those programs at their projected peaks if longer
  (young programs keep the door shut for the memory they are about to need), and at most
  ``max_wait`` seconds (60 s for a chat-sized prompt of at most 512 tokens); once the pressure is gone, the programs it held enter only while their
  peaks fit in 1.5x the target, so that the backlog does not flood memory at once; when the active
  programs' working set outgrows the target, it takes programs in a tool call out of the
  active set (latest first) until they fit.
"""
from __future__ import annotations

from dataclasses import dataclass

from continuum.errors import ConfigError
from continuum.knobs import knob
from continuum.kv_ttl.ttl import cold_start_ttl, solve_ttl
from continuum.request import Request, RequestStatus
from continuum.scheduler.admission import AdmissionControl
from continuum.scheduler.policies.continuum import ContinuumPolicy
from continuum.scheduler.policy import (CACHE_SURVIVES, COLD_START, LOW_DUTY, RELOAD_CHEAP, FinishAction,
                                       free_because)


@dataclass(frozen=True)
class ContinuumPlusConfig:
    admission_target: float = knob(1.0, "continuum+: the active programs' working set (the most "
                                        "KV they are expected to hold at once) / KV blocks at which "
                                        "new programs wait (> 1 overbooks)")
    # A cap over the bound in rounds (admission.py, "the wait bound"), which is what binds past
    # the cliff. 180 s: a newcomer admitted on its bound no longer floods memory (the door
    # demotes programs in a tool call once the working set outgrows the target), so the bound
    # spreads waiting instead of re-creating the thrash. On the whole matrix 180 s cut the
    # mix's turn-TTFT P99 at 20 GB from 3.1-3.4x to 2.1-3.2x vllm's at no mean-JCT harm; 120 s
    # cut it further but made the mix at 20 GB @ 1 1.04x vllm's mean JCT, and 60 s costs the
    # coding agents their gain (docs/scheduling.md, "the wait bound").
    door_max_wait: float = knob(180.0, "continuum+: seconds a new program waits at most at the door "
                                       "(admission control) before it is admitted anyway (one with a prompt "
                                       "of at most 512 tokens: at most 60 s); the door's own bound in rounds "
                                       "of the programs in the system (docs/scheduling.md) is usually shorter")

    def __post_init__(self) -> None:
        if self.admission_target <= 0 or self.door_max_wait <= 0:
            raise ConfigError("admission_target and door_max_wait must be > 0")


class ContinuumPlusPolicy(ContinuumPolicy):
    name = "continuum+"
    config_cls = ContinuumPlusConfig

    def __init__(self, config: ContinuumPlusConfig = ContinuumPlusConfig()):
        self.door = AdmissionControl(config.admission_target, config.door_max_wait)

    def bind(self, ctx) -> None:
        super().bind(ctx)
        self.door.bind(ctx)

    def waiting_key(self, req: Request) -> tuple:
        return (req.status != RequestStatus.PREEMPTED, req.program_id not in self._pinned,
                req.arrival_time, req.seq_no)

    def victim_key(self, req: Request) -> tuple:
        return (req.arrival_time, req.seq_no)

    def on_step(self, now: float) -> list:
        self.door.begin_step()
        return []

    def admit(self, req: Request, now: float) -> bool:
        return self.door.admit(req, now)

    def on_admit(self, req: Request, now: float) -> None:
        self.door.on_admit(req)

    def snapshot(self) -> dict[str, float]:
        d = self.door
        return {"admission_held_steps_total": d.num_held,
                "admission_working_set_blocks": d.last_working_set,
                "admission_faults_total": d.num_faults, "admission_returns_total": d.num_returns,
                "admission_timeouts_total": d.num_timeouts,
                "admission_demoted_total": d.num_demoted,
                "admission_door_engaged": float(d.engaged),
                "kv_eviction_horizon_seconds": min(self.ctx.eviction.seconds, 1e9)}

    def on_finish(self, req: Request, now: float) -> FinishAction:
        self.door.on_finish(req, now)
        if req.program_record is not None and not req.program_record.kept:
            return free_because(LOW_DUTY)     # computes under 1/DUTY of the time: no pin
        return super().on_finish(req, now)

    def why_no_ttl(self, tool: str | None, context_tokens: int) -> str:
        """Cold: the prior's TTL was 0, or no longer than the cache keeps the KV anyway.
        Warm: no call outlasts the cache (so none can be won), or none pays for its memory."""
        ctx = self.ctx
        horizon = ctx.eviction.seconds
        samples = ctx.predictor.samples(tool)
        if samples is None:
            tau = cold_start_ttl(ctx.queue_delay.value, ctx.reload_cost.seconds(context_tokens))
            return CACHE_SURVIVES if tau > 0 else COLD_START
        return CACHE_SURVIVES if samples[-1] <= horizon else RELOAD_CHEAP

    def choose_ttl(self, tool: str | None, context_tokens: int) -> float:
        """The TTL argmax over the calls the cache would not survive, memory priced by share
        (module docstring)."""
        ctx = self.ctx
        reload = ctx.reload_cost.seconds(context_tokens)
        horizon = ctx.eviction.seconds
        samples = ctx.predictor.samples(tool)
        if samples is None:
            tau = cold_start_ttl(ctx.queue_delay.value, reload)
            return tau if tau > horizon else 0.0
        price = max(ctx.kv.blocks_for(context_tokens) / ctx.kv.pool.num_blocks,
                    1.0 / ctx.config.max_num_seqs)
        benefit = ctx.queue_delay.value * ctx.eta.value + reload
        return solve_ttl(samples, benefit / price, survives=horizon)

