"""One replay loop (``continuum.bench.replayer.replay``) drives every in-process target: the
simulator over one scheduler, N routed simulated replicas, and the real ``LLMEngine``."""
from __future__ import annotations

from dataclasses import asdict

import pytest

from continuum.bench.generators import generate
from continuum.bench.replay import assign_arrivals
from continuum.bench.replayer import TurnDone, TurnSend, replay
from continuum.bench.trace import ProgramTrace, Turn
from continuum.config import EngineArgs
from continuum.distributed.router import Router
from continuum.distributed.sim_routing import RoutedExecutor, simulate_replicas
from continuum.engine.engine import LLMEngine
from continuum.bench.engine_driver import EngineExecutor
from continuum.sim.cost_model import CostModel
from continuum.sim.profile import load_profile
from continuum.sim.simulator import SIM_VOCAB, SimConfig, SimExecutor, simulate
from continuum.sim.stepper import SimReplica, make_scheduler, sim_capacity

ENGINE = dict(model="random:tiny", num_blocks_override=64, max_num_batched_tokens=64, max_num_seqs=8)

# Program "b"'s final turn does not say it is last (hand-built traces may omit the flag):
# the replayer still marks it, on every target.
PROGRAMS = [ProgramTrace("a", [Turn(20, 4, "ls", 0.01), Turn(9, 3, "cat", 0.0), Turn(5, 2, None, 0.0, True)]),
            ProgramTrace("b", [Turn(40, 5, "grep", 0.02), Turn(7, 2)]),
            ProgramTrace("c", [Turn(3, 6, None, 0.0, True)])]
ARRIVALS = [0.0, 0.01, 0.02]


class Recording:
    """A real executor, observed: what the replayer sent it and what it reported back."""

    def __init__(self, inner):
        self.inner = inner
        self.sent: list[TurnSend] = []
        self.done: list[TurnDone] = []

    def clock(self) -> float:
        return self.inner.clock()

    def send(self, turn: TurnSend) -> None:
        self.sent.append(turn)
        self.inner.send(turn)

    def busy(self) -> bool:
        return self.inner.busy()

    def advance(self, next_send):
        done = self.inner.advance(next_send)
        self.done += done
        return done

    def gauges(self):
        return self.inner.gauges()


@pytest.fixture(scope="module")
def cost():
    return CostModel(load_profile("h200-llama3.1-8b"))


def _sim_replicas(cost, cfg, n):
    num_blocks, max_len = sim_capacity(PROGRAMS, cost, cfg)
    return [SimReplica(make_scheduler(cost, cfg, num_blocks, max_len), cost, cfg.block_size)
            for _ in range(n)], max_len


def _executor(kind: str, cost):
    cfg = SimConfig(policy="continuum", num_blocks=64)
    if kind == "sim":
        (rep,), max_len = _sim_replicas(cost, cfg, 1)
        return SimExecutor(rep, max_len), SIM_VOCAB
    if kind == "routed":
        reps, max_len = _sim_replicas(cost, cfg, 2)
        return RoutedExecutor(reps, Router("continuum", [0, 1]), max_len), SIM_VOCAB
    engine = LLMEngine(EngineArgs.from_kwargs(**ENGINE, scheduling_policy="continuum"))
    return EngineExecutor(engine), (0, 256)


@pytest.mark.parametrize("kind", ["sim", "routed", "engine"])
def test_every_executor_gets_the_same_turns_from_the_replayer(kind, cost):
    """Same requests (ids, prompt lengths, forced output length, last-turn flag) on every
    target; each next turn is sent exactly its tool time after its previous turn finished."""
    ex, vocab = _executor(kind, cost)
    rec = Recording(ex)
    r = replay(PROGRAMS, ARRIVALS, rec, seed=0, vocab=vocab, sample_interval=0.001)
    sent = sorted((t.request_id, len(t.prompt), t.params.min_tokens, t.params.max_tokens,
                   t.params.ignore_eos, t.agent.turn, t.last, t.agent.tool_name) for t in rec.sent)
    assert sent == [("a#0", 20, 4, 4, True, 0, False, "ls"), ("a#1", 33, 3, 3, True, 1, False, "cat"),
                    ("a#2", 41, 2, 2, True, 2, True, None), ("b#0", 40, 5, 5, True, 0, False, "grep"),
                    ("b#1", 52, 2, 2, True, 1, True, None), ("c#0", 3, 6, 6, True, 0, True, None)]
    assert sorted(d.request_id for d in rec.done) == [s[0] for s in sent]
    for prog, p in zip(PROGRAMS, r.programs):
        assert [t.output_tokens for t in p.turns] == [t.output_tokens for t in prog.turns]
        for k in range(1, len(p.turns)):
            assert p.turns[k].submit == p.turns[k - 1].finish + prog.turns[k - 1].tool_duration
        assert p.finish == p.turns[-1].finish
        assert all(t.first_token is not None and t.submit <= t.first_token <= t.finish for t in p.turns)
    assert r.timeline and all(set(s) == {"t", "kv_usage", "running", "waiting", "pinned_blocks"}
                              for s in r.timeline)
    if kind == "engine":
        ex.engine.step()
        ex.engine.check_integrity()
    else:
        for rep in (ex.replicas if kind == "routed" else [ex.replica]):
            rep.sched.check_integrity()


@pytest.mark.parametrize("policy", ["continuum", "infercept"])
def test_one_routed_replica_gives_the_simulators_records_and_stats(cost, policy):
    """Under contention (sends landing inside steps, preemptions, swaps to a host tier, pins),
    one replica behind the router replays turn for turn like the single-replica simulator."""
    progs = generate("swe", 16, seed=1, scale=0.1)
    arrivals = assign_arrivals(progs, 20.0, 1)
    cfg = SimConfig(policy=policy, num_blocks=160, max_num_batched_tokens=512, seed=1, num_host_blocks=400)
    a = simulate(progs, arrivals, cost, cfg)
    b = simulate_replicas(progs, arrivals, cost, cfg, 1, "round-robin")
    assert [asdict(p) for p in a.programs] == [asdict(p) for p in b.programs]
    assert sum(t.preemptions for p in a.programs for t in p.turns) > 0      # contention happened
    assert a.stats["swap_in_blocks_total"] > 0
    assert a.sim_seconds == b.sim_seconds
    timing = ("scheduler_time_seconds_total", "scheduler_time_seconds_max")
    assert {k: v for k, v in a.stats.items() if k not in timing} == \
           {k: v for k, v in b.replica_stats[0].items() if k not in timing}
