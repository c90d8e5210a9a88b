"""End to end on the real engine (seeded random Llama, forced output lengths, test clock):
a 3-turn program's follow-up turns hit their pinned prefix under ``continuum`` after traffic
that evicts it under ``vllm``; the host tier brings evicted KV back by swap-in. Greedy tokens
are identical in every configuration."""
import pytest
import torch

from continuum.config import EngineArgs
from continuum.engine.engine import LLMEngine
from continuum.kv_ttl.reload_cost import PrefillCost
from continuum.request import AgentInfo
from continuum.sampling_params import SamplingParams

GREEDY = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
TRAFFIC = SamplingParams(temperature=0, max_tokens=10, ignore_eos=True)


def tokens(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, 250, (n,), generator=g).tolist()


def run_program(policy, host_kv_cache_memory=None, tensor_parallel_size=1):
    now = [0.0]
    eng = LLMEngine(EngineArgs(model="random:tiny", dtype="float32", num_blocks_override=16,
                               max_model_len=256, scheduling_policy=policy, device="cpu",
                               host_kv_cache_memory=host_kv_cache_memory,
                               tensor_parallel_size=tensor_parallel_size),
                    clock=lambda: now[0])
    # Rebuilding a context "costs" 3 s, so continuum's cold-start TTL is ln 3 = 1.1 s.
    eng.scheduler.set_reload_cost(prefill=PrefillCost(0.0, 0.0, 3.0))

    def drain():
        outs = {}
        while eng.has_unfinished_requests():
            for o in eng.step():
                if o.finished:
                    outs[o.request_id] = o
            eng.check_integrity()
        return outs

    def traffic(wave):
        now[0] += 0.1
        for i in range(3):                  # 3 x (50 + 10 tokens) = 12 of the 16 blocks
            eng.add_request(tokens(50, 100 + 10 * wave + i), TRAFFIC, request_id=f"w{wave}-{i}")
        drain()

    prompt, got, cached = tokens(40, 1), [], []
    for turn in range(3):
        now[0] += 0.2
        eng.add_request(prompt, GREEDY, request_id=f"p-{turn}",
                        agent=AgentInfo(program_id="p", turn=turn, is_last_step=turn == 2, tool_name="ls"))
        out = drain()[f"p-{turn}"]
        got.append(out.outputs[0].token_ids)
        cached.append(out.num_cached_tokens)
        if turn < 2:
            traffic(2 * turn)               # the tool runs while other programs' traffic flows
            traffic(2 * turn + 1)
            prompt = prompt + got[-1] + tokens(16, 50 + turn)   # + the tool's result
    eng.shutdown()
    return got, cached, eng.stats()


@pytest.fixture(scope="module")
def vllm_run():
    return run_program("vllm")


def test_continuum_follow_up_turns_hit_the_pinned_prefix(vllm_run):
    got, cached, st = run_program("continuum")
    v_got, v_cached, v_st = vllm_run
    assert got == v_got
    # turn 1 computed 47 tokens: 2 full blocks pinned; turn 2 computed 71: 4 blocks
    assert cached == [0, 32, 64]
    assert v_cached == [0, 0, 0]            # under vllm the traffic evicted them
    assert st["pins_made_total"] == 2 and st["pins_hit_total"] == 2
    assert st["pins_force_released_total"] == 0 and st["pinned_blocks"] == 0
    assert st["pin_ttl_ms_le_2000"] == 2 and st["pin_ttl_ms_le_1000"] == 0
    assert st["prefix_cache_hits_total"] - v_st["prefix_cache_hits_total"] == 96
    assert st["scheduler_time_seconds_total"] > 0


def test_host_tier_swaps_evicted_prefix_back_with_identical_tokens(vllm_run):
    got, cached, st = run_program("vllm", host_kv_cache_memory="512KiB")
    assert got == vllm_run[0]
    assert cached == [0, 32, 64]            # reloaded from host memory instead of recomputed
    assert st["swap_in_blocks_total"] == 6 and st["swap_out_blocks_total"] > 0
    assert st["prefix_cache_host_hits_total"] == 96


def test_host_tier_swaps_run_on_every_tensor_parallel_rank(vllm_run):
    """Two ranks, each swapping its own KV head: the same swaps as one rank and the same
    tokens. The budget is per rank and a rank's block is half of one rank's block, so half
    the bytes give the one-rank test's 64 host blocks."""
    got, cached, st = run_program("vllm", host_kv_cache_memory="256KiB", tensor_parallel_size=2)
    assert got == vllm_run[0]
    assert cached == [0, 32, 64]
    assert st["swap_in_blocks_total"] == 6 and st["prefix_cache_host_hits_total"] == 96


@pytest.mark.parametrize("policy", ["program-fcfs", "fixed-ttl", "continuum+", "autellix", "infercept"])
def test_every_policy_gives_the_same_greedy_tokens(policy, vllm_run):
    got, _, _ = run_program(policy, host_kv_cache_memory="256KiB" if policy == "infercept" else None)
    assert got == vllm_run[0]
