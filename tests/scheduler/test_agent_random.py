"""Random multi-turn agent workloads under memory pressure: every policy, with and without
the host tier, keeps the books straight after every step and always makes progress."""
import random

import pytest

from continuum.request import RequestStatus
from continuum.scheduler import admission
from continuum.scheduler.admission import AdmissionControl
from continuum.scheduler.policies.continuum_plus import ContinuumPlusConfig, ContinuumPlusPolicy
from tests.scheduler.agent_helpers import FixedHorizon, areq, make_sched, step

POLICY_NAMES = ["vllm", "program-fcfs", "fixed-ttl", "continuum", "continuum+", "autellix", "infercept"]


def _engaged_door() -> FixedHorizon:
    """An eviction horizon of 0 s: continuum+'s door engaged from the first step."""
    return FixedHorizon(0.0)


class _FlappingHorizon(FixedHorizon):
    """An eviction horizon that jumps between 0 s and 100 s at random steps: continuum+'s
    door engages, holds, disengages and releases its backlog over and over."""

    def __init__(self, seed: int):
        super().__init__(0.0)
        self.rng = random.Random(seed)

    def update(self, *args) -> None:
        if self.rng.random() < 0.2:
            self.seconds = 100.0 - self.seconds


def simulate(policy, seed, host_blocks=0, num_blocks=20, programs=16, max_len=64, eviction=None):
    rng = random.Random(seed)
    s = make_sched(policy, num_blocks=num_blocks, block_size=4, budget=24, max_seqs=4,
                   max_len=max_len, host_blocks=host_blocks, pin_budget_fraction=0.6)
    if eviction is not None:
        s.agents.ctx.eviction = eviction
    # make continuum pin from the first turn: reload costs 3 s -> cold-start TTL ln 3
    from continuum.kv_ttl.reload_cost import PrefillCost
    s.set_reload_cost(prefill=PrefillCost(0.0, 0.0, 3.0))
    tools = ["ls", "git", "pytest"]
    plan = {}                                   # program -> [turns left, prompt so far]
    pending = []                                # (arrival time, program)
    for p in range(programs):
        pending.append((rng.uniform(0, 3), f"p{p}"))
        plan[f"p{p}"] = [rng.randint(1, 6), [rng.randrange(1000) for _ in range(rng.randint(4, 14))]]
    now, steps, n_req = 0.0, 0, 0
    live: dict[str, str] = {}                   # request id -> program
    done_programs = set()
    while len(done_programs) < programs:
        steps += 1
        assert steps < 3000, "no progress"
        now += 0.1
        for t, p in sorted(pending):
            if t <= now:
                pending.remove((t, p))
                left, prompt = plan[p]
                n_req += 1
                rid = f"{p}-r{n_req}"
                s.add_request(areq(rid, list(prompt), t, p, last=left == 1, tool=rng.choice(tools),
                                   max_tokens=rng.randint(1, 5)))
                live[rid] = p
        out, done = step(s, now, tok=rng.randrange(1000))
        for r in done:
            p = live.pop(r.request_id)
            assert r.status == RequestStatus.FINISHED_LENGTH
            plan[p][0] -= 1
            if plan[p][0] == 0:
                done_programs.add(p)
                continue
            nxt = r.all_token_ids + [rng.randrange(1000) for _ in range(rng.randint(1, 6))]
            if len(nxt) + 6 > max_len:         # keep the context bounded
                nxt = nxt[: max_len - 6]
            plan[p][1] = nxt
            pending.append((now + rng.choice([0.05, 0.3, 1.0, 4.0]), p))
    # drain pins by letting time pass
    s.schedule(now + 1e6)
    s.check_integrity()
    if policy != "infercept":                   # InferCept preserves until it decides
        assert len(s.agents.pins) == 0
    return s


@pytest.mark.parametrize("policy", POLICY_NAMES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_agent_workload_integrity_and_progress(policy, seed):
    s = simulate(policy, seed)
    assert s.stats.num_finished > 10


@pytest.mark.parametrize("policy", ["continuum", "continuum+", "infercept", "vllm"])
def test_random_agent_workload_with_host_tier(policy):
    s = simulate(policy, 5, host_blocks=12)
    assert s.kv.stats.swap_out_blocks > 0


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_continuum_plus_never_wedges_with_its_door_engaged(seed):
    """The door holds new programs throughout (and pins every call the 0 s horizon would lose):
    still every program finishes, the books balance after every step, nothing leaks."""
    s = simulate("continuum+", seed, eviction=_engaged_door())
    assert s.policy.door.engaged and s.policy.door.num_held > 0
    assert s.stats.num_finished > 10 and s.stats.pins_made > 0


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_continuum_plus_never_wedges_with_a_flapping_door(seed, monkeypatch):
    """The pressure comes and goes at random: the door holds newcomers, and once disengaged
    lets its backlog in under the 1.5x rule or keeps holding it, again and again; every program
    finishes, the books balance after every step, nothing leaks. (Target 0.5 and no prompt
    counted as chat-sized, so that this small cache exercises both outcomes.)"""
    monkeypatch.setattr(admission, "SMALL_PROMPT_TOKENS", 0)
    outcomes = []                 # (admitted?) of backlog newcomers at the disengaged door
    admit = AdmissionControl.admit

    def watched(self, req, now):
        rec = req.program_record
        backlog = rec is not None and rec.held and not rec.admitted
        ok = admit(self, req, now)
        if backlog and not self.engaged:
            outcomes.append(ok)
        return ok

    monkeypatch.setattr(AdmissionControl, "admit", watched)
    policy = ContinuumPlusPolicy(ContinuumPlusConfig(admission_target=0.5))
    s = simulate(policy, seed, eviction=_FlappingHorizon(seed))
    assert True in outcomes and False in outcomes and s.stats.num_finished > 10


def test_continuum_pins_and_hits_under_pressure():
    s = simulate("continuum", 11)
    st = s.stats
    assert st.pins_made > 0 and st.pins_hit > 0
    assert st.pins_made >= st.pins_hit + st.pins_expired + st.pins_force_released
