"""Greedy generation through the whole engine is token-identical to transformers' generate."""
import pytest
import torch

from continuum.llm import LLM
from continuum.sampling_params import SamplingParams

N_NEW = 12


def hf_greedy(model, prompt, n=N_NEW):
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=n, min_new_tokens=n,
                             do_sample=False, pad_token_id=0)
    return out[0, len(prompt):].tolist()


def prompts_of(lengths, seed=1, vocab=250):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, vocab, (n,), generator=g).tolist() for n in lengths]


def run(llm, prompts, n=N_NEW):
    outs = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=n, ignore_eos=True), use_tqdm=False)
    llm.engine.check_integrity()
    return [o.outputs[0].token_ids for o in outs]


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3"])
def test_batch_of_different_lengths(hf_checkpoints, arch):
    path, hf = hf_checkpoints[arch]
    llm = LLM(path, dtype="float32", kv_cache_memory="64MiB", max_num_batched_tokens=64)
    prompts = prompts_of([5, 17, 33, 48, 1])
    assert run(llm, prompts) == [hf_greedy(hf, p) for p in prompts]


def test_prefix_cache_hits_give_same_tokens(hf_checkpoints):
    path, hf = hf_checkpoints["llama"]
    llm = LLM(path, dtype="float32", kv_cache_memory="64MiB")
    base = prompts_of([40, 40], seed=3)
    first = run(llm, base)
    # second turn: previous prompt + output + new text, as an agent's next turn would be
    follow = [p + o + q for p, o, q in zip(base, first, prompts_of([9, 21], seed=4))]
    stats = llm.engine.scheduler.kv.stats
    hits_before = stats.hits
    assert run(llm, follow) == [hf_greedy(hf, p) for p in follow]
    assert stats.hits - hits_before >= 2 * 48   # both reuse at least their 3 full blocks
    assert first == [hf_greedy(hf, p) for p in base]


def test_forced_preemption_gives_same_tokens(hf_checkpoints):
    path, hf = hf_checkpoints["qwen2"]
    # 10 blocks of 16 tokens = 160 slots for 4 requests that end at ~52 tokens each
    llm = LLM(path, dtype="float32", num_blocks_override=10, max_model_len=160)
    prompts = prompts_of([30, 28, 33, 25], seed=5)
    n = 24
    got = run(llm, prompts, n)
    assert llm.engine.scheduler.stats.num_preemptions > 0
    assert got == [hf_greedy(hf, p, n) for p in prompts]


def test_chunked_prefill_tiny_budget(hf_checkpoints):
    path, hf = hf_checkpoints["qwen3"]
    llm = LLM(path, dtype="float32", kv_cache_memory="64MiB", max_num_batched_tokens=7)
    prompts = prompts_of([30, 11], seed=6)
    assert run(llm, prompts) == [hf_greedy(hf, p) for p in prompts]
