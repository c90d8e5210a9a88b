"""Helpers for agent-scheduling tests: a fake executor, an injected clock, agent requests."""
from __future__ import annotations

from continuum.config import CacheConfig, SchedulerConfig
from continuum.request import AgentInfo, Request
from continuum.sampling_params import SamplingParams
from continuum.scheduler.policies.continuum import ContinuumPolicy
from continuum.scheduler.scheduler import Scheduler


class ConstTTL(ContinuumPolicy):
    """Continuum's ordering with a fixed TTL: lifecycle tests need an exact expiry."""

    def __init__(self, ttl: float = 2.0):
        self.ttl = ttl

    def choose_ttl(self, tool, context_tokens):
        return self.ttl


class FixedHorizon:
    """A fixed eviction horizon (what ``kv_ttl.eviction.EvictionHorizon`` measures), blocks
    taken at ``rate`` per second (by default so fast that a host tier adds nothing)."""

    def __init__(self, seconds: float, rate: float = float("inf")):
        self.seconds, self.rate = seconds, rate

    def seconds_with(self, behind: int) -> float:
        return self.seconds + behind / self.rate

    def update(self, *args) -> None:
        pass


def make_sched(policy="continuum", num_blocks=16, block_size=4, budget=64, max_seqs=8, max_len=64,
               host_blocks=0, output_text=None, **cfg):
    pol = policy if not isinstance(policy, str) else None
    sc = SchedulerConfig(max_num_batched_tokens=budget, max_num_seqs=max_seqs,
                         policy=policy if isinstance(policy, str) else "continuum", **cfg)
    return Scheduler(sc, CacheConfig(block_size=block_size), num_blocks, max_len, policy=pol,
                     num_host_blocks=host_blocks, output_text=output_text)


def areq(rid, tokens, t, program=None, last=False, tool="ls", max_tokens=2):
    """A request of ``program`` whose turn ends in a call of ``tool`` (None: no tool call)."""
    if isinstance(tokens, int):
        tokens = list(range(tokens))
    agent = AgentInfo(program_id=program, is_last_step=last, tool_name=tool)
    return Request(rid, tokens, SamplingParams(max_tokens=max_tokens, ignore_eos=True),
                   arrival_time=t, agent=agent)


def step(s, now, tok=7):
    out = s.schedule(now)
    sampled = [tok if x.samples else None for x in out.scheduled]
    done = s.update_from_output(out, sampled, now)
    s.check_integrity()
    return out, done


def run_until_idle(s, now, tok=7, max_steps=1000):
    for _ in range(max_steps):
        if not s.has_unfinished():
            return
        step(s, now, tok)
    raise AssertionError("no progress")


def plan(out):
    return [(x.request.request_id, x.start, x.num_new_tokens, x.samples) for x in out.scheduled]
