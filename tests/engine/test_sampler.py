"""Sampler: greedy fast path, seeded draws, top-k/top-p/min-p, penalties, min_tokens, logprobs."""
from __future__ import annotations

import math

import pytest
import torch

from continuum.engine.sampler import Sampler, SamplingBatch, apply_penalties
from continuum.sampling_params import SamplingParams

V = 64
EOS = 7


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tensors are tiny: intra-op threads only add stalls on a busy 2-core box."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_batch(params: list[SamplingParams], outputs: list[list[int]] | None = None,
               prompts: list[list[int]] | None = None,
               generators: list[torch.Generator | None] | None = None) -> SamplingBatch:
    n = len(params)
    if generators is None:
        generators = [torch.Generator().manual_seed(p.seed) if p.seed is not None else None
                      for p in params]
    return SamplingBatch(params=params, generators=generators,
                         output_token_ids=outputs or [[] for _ in range(n)],
                         prompt_token_ids=prompts or [[] for _ in range(n)],
                         eos_token_ids=[EOS])


def rand_logits(n: int, seed: int = 0, v: int = V) -> torch.Tensor:
    return torch.randn(n, v, generator=torch.Generator().manual_seed(seed)) * 3


def draws(logits_row: list[float], params: SamplingParams, n: int = 400, seed: int = 1) -> set[int]:
    """Tokens sampled over n rows of identical logits (one batched call, global RNG seeded)."""
    torch.manual_seed(seed)
    logits = torch.tensor([logits_row] * n)
    out = Sampler()(logits, make_batch([params] * n))
    return set(out.token_ids)


def test_greedy_is_argmax_and_uses_fast_path(monkeypatch):
    logits = rand_logits(5)
    before = logits.clone()
    monkeypatch.setattr(Sampler, "_general", lambda *a: pytest.fail("fast path expected"))
    out = Sampler()(logits, make_batch([SamplingParams(temperature=0.0)] * 5,
                                       outputs=[[1, 2]] * 5))
    assert out.token_ids == logits.argmax(-1).tolist()
    assert out.logprobs == [None] * 5
    assert torch.equal(logits, before)


def test_greedy_rows_in_mixed_batch_are_argmax():
    logits = rand_logits(4)
    params = [SamplingParams(temperature=0.0), SamplingParams(temperature=1.0, seed=3),
              SamplingParams(temperature=0.0, logprobs=2), SamplingParams(temperature=0.7)]
    out = Sampler()(logits, make_batch(params))
    assert out.token_ids[0] == logits[0].argmax().item()
    assert out.token_ids[2] == logits[2].argmax().item()


def test_seeded_reproducible_and_batch_invariant():
    logits = rand_logits(4, seed=5)
    target = SamplingParams(temperature=1.0, top_k=20, seed=1234)

    def run_alone(steps: int) -> list[int]:
        g = torch.Generator().manual_seed(1234)
        return [Sampler()(logits[:1], make_batch([target], generators=[g])).token_ids[0]
                for _ in range(steps)]

    def run_batched(steps: int) -> list[int]:
        # Other rows change the batch's sort width (no top-k), greedy rows and global-RNG rows.
        others = [SamplingParams(temperature=0.8), SamplingParams(temperature=0.0),
                  SamplingParams(temperature=1.3, top_p=0.9, seed=99)]
        g = torch.Generator().manual_seed(1234)
        g2 = torch.Generator().manual_seed(99)
        toks = []
        for _ in range(steps):
            batch = make_batch([others[0], target, others[1], others[2]],
                               generators=[None, g, None, g2])
            toks.append(Sampler()(logits[[1, 0, 2, 3]], batch).token_ids[1])
        return toks

    alone = run_alone(30)
    assert alone == run_alone(30)
    assert run_batched(30) == alone
    assert len(set(alone)) > 3  # really random, not stuck on one token


def test_different_seeds_differ():
    logits = torch.zeros(1, V)  # uniform: two seeds agreeing on 20 draws is ~64**-20
    seqs = []
    for seed in (1, 2):
        g = torch.Generator().manual_seed(seed)
        p = SamplingParams(temperature=1.0, seed=seed)
        seqs.append([Sampler()(logits, make_batch([p], generators=[g])).token_ids[0]
                     for _ in range(20)])
    assert seqs[0] != seqs[1]


def test_top_k_1_is_greedy():
    logits = rand_logits(8, seed=2)
    out = Sampler()(logits, make_batch([SamplingParams(temperature=1.5, top_k=1)] * 8))
    assert out.token_ids == logits.argmax(-1).tolist()


def test_top_k_mask():
    row = torch.randn(V, generator=torch.Generator().manual_seed(3)).tolist()
    allowed = set(torch.tensor(row).topk(5).indices.tolist())
    seen = draws(row, SamplingParams(temperature=2.0, top_k=5), n=2000)
    assert seen == allowed  # every top-5 token shows up, nothing else ever does


def test_top_p_mask():
    probs = [0.6, 0.3, 0.05, 0.05]
    row = [math.log(p) for p in probs]
    # p=0.5: the best token alone already holds >= 0.5 of the mass.
    assert draws(row, SamplingParams(top_p=0.5)) == {0}
    # p=0.7: 0.6 < 0.7 so the second token is needed too; 0.9 >= 0.7 cuts the rest.
    assert draws(row, SamplingParams(top_p=0.7)) == {0, 1}
    assert draws(row, SamplingParams(top_p=1.0), n=2000) == {0, 1, 2, 3}


def test_min_p_mask():
    row = [math.log(p) for p in (0.5, 0.3, 0.15, 0.05)]
    # Threshold 0.2 * 0.5 = 0.1 removes only the last token.
    assert draws(row, SamplingParams(min_p=0.2), n=2000) == {0, 1, 2}
    assert draws(row, SamplingParams(min_p=0.7)) == {0}


def test_combined_top_k_top_p_min_p_in_one_batch():
    row = [math.log(p) for p in (0.4, 0.3, 0.2, 0.1)]
    params = [SamplingParams(top_k=2), SamplingParams(top_p=0.65), SamplingParams(min_p=0.6),
              SamplingParams()]
    torch.manual_seed(0)
    seen: list[set[int]] = [set() for _ in params]
    for _ in range(300):
        out = Sampler()(torch.tensor([row] * 4), make_batch(params))
        for s, t in zip(seen, out.token_ids):
            s.add(t)
    assert seen == [{0, 1}, {0, 1}, {0, 1}, {0, 1, 2, 3}]


def test_temperature_sharpens_and_flattens():
    row = [1.0, 0.0]
    n = 4000

    def frac_top(t: float) -> float:
        torch.manual_seed(7)
        out = Sampler()(torch.tensor([row] * n), make_batch([SamplingParams(temperature=t)] * n))
        return out.token_ids.count(0) / n

    for t in (0.5, 1.0, 2.0):
        expected = 1 / (1 + math.exp(-1.0 / t))
        assert abs(frac_top(t) - expected) < 0.03, t


def test_penalty_function_exact():
    logits = torch.tensor([[2.0, -2.0, 1.0, 0.5, -1.0, 3.0],
                           [2.0, -2.0, 1.0, 0.5, -1.0, 3.0]])
    out = apply_penalties(logits, prompt_token_ids=[[0], []],
                          output_token_ids=[[1, 2, 2], [5]],
                          repetition_penalties=torch.tensor([2.0, 1.0]),
                          frequency_penalties=torch.tensor([0.5, 0.0]),
                          presence_penalties=torch.tensor([0.25, 1.0]))
    expected = torch.tensor([
        # token0: prompt only -> 2/2; token1: -2*2 - 0.5*1 - 0.25; token2: 1/2 - 0.5*2 - 0.25
        [1.0, -4.75, -0.75, 0.5, -1.0, 3.0],
        # row 2: presence 1.0 on token 5 only
        [2.0, -2.0, 1.0, 0.5, -1.0, 2.0],
    ])
    assert torch.allclose(out, expected)
    assert logits[0, 0] == 2.0  # input untouched


def test_penalties_applied_before_greedy():
    logits = torch.zeros(1, V)
    logits[0, 3] = 1.0
    logits[0, 4] = 0.9
    batch = make_batch([SamplingParams(temperature=0.0, repetition_penalty=1.5)],
                       prompts=[[3]])
    assert Sampler()(logits, batch).token_ids == [4]
    batch = make_batch([SamplingParams(temperature=0.0, frequency_penalty=0.05)],
                       outputs=[[3, 3, 3]])
    assert Sampler()(logits, batch).token_ids == [4]


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_min_tokens_masks_eos_and_stop_token_ids(temperature: float):
    logits = torch.full((1, V), -10.0)
    logits[0, EOS] = 10.0
    logits[0, 11] = 9.0
    logits[0, 12] = 5.0
    p = SamplingParams(temperature=temperature, top_k=1, min_tokens=3, stop_token_ids=[11])
    sample = lambda out, params=p: Sampler()(logits, make_batch([params], outputs=[out])).token_ids
    assert sample([1, 2]) == [12]      # eos and stop id 11 masked
    assert sample([1, 2, 3]) == [EOS]  # min_tokens reached
    # ignore_eos: eos is not a stop so it is not masked; stop_token_ids still are.
    q = SamplingParams(temperature=temperature, top_k=1, min_tokens=3, stop_token_ids=[11],
                       ignore_eos=True)
    assert sample([1], q) == [EOS]
    logits[0, EOS] = -10.0
    assert sample([1], q) == [12]


def test_logprobs_are_raw_log_softmax():
    logits = rand_logits(3, seed=9)
    params = [SamplingParams(temperature=0.5, repetition_penalty=1.7, logprobs=5),
              SamplingParams(temperature=0.0),
              SamplingParams(temperature=0.0, presence_penalty=2.0, logprobs=0)]
    out = Sampler()(logits, make_batch(params, outputs=[[0, 1, 2]] * 3, prompts=[[3]] * 3))
    ref = torch.log_softmax(logits, dim=-1)
    assert out.logprobs[1] is None
    for row in (0, 2):
        lp = out.logprobs[row]
        tok = out.token_ids[row]
        assert lp.token_id == tok
        assert lp.logprob == pytest.approx(ref[row, tok].item(), abs=1e-5)
        assert lp.rank == int((ref[row] > ref[row, tok]).sum()) + 1
    top = out.logprobs[0].top
    assert len(top) == 5 and out.logprobs[2].top == []
    vals, ids = ref[0].topk(5)
    assert [t for t, _ in top] == ids.tolist()
    assert [v for _, v in top] == pytest.approx(vals.tolist(), abs=1e-5)
    assert all(a[1] >= b[1] for a, b in zip(top, top[1:]))


def test_greedy_logprob_rank_is_one():
    logits = rand_logits(2, seed=4)
    out = Sampler()(logits, make_batch([SamplingParams(temperature=0.0, logprobs=1)] * 2))
    assert [lp.rank for lp in out.logprobs] == [1, 1]
    assert [lp.top[0][0] for lp in out.logprobs] == out.token_ids


def test_caller_logits_untouched_on_general_path():
    logits = rand_logits(2, seed=6)
    before = logits.clone()
    params = [SamplingParams(temperature=0.9, top_p=0.8, min_p=0.05, repetition_penalty=1.3,
                             min_tokens=2, stop_token_ids=[1]),
              SamplingParams(temperature=0.0, min_tokens=5)]
    Sampler()(logits, make_batch(params, outputs=[[2], [3]], prompts=[[4], [5]]))
    assert torch.equal(logits, before)


def _reference_threshold(row: torch.Tensor, k: int, p: float) -> float:
    """vLLM's position-based top-k then top-p on one row (distinct values): min kept value."""
    vals = row.double().sort(descending=True).values
    if 0 < k < len(vals):
        vals = vals[:k]
    probs = torch.softmax(vals, dim=0)
    exclusive = torch.cumsum(probs, 0) - probs
    kept = int((exclusive < p).sum()) if p < 1.0 else len(vals)
    return vals[kept - 1].item()


@pytest.mark.parametrize("scale", [0.05, 4.0])  # flat (nucleus > prefilter) and peaked
def test_thresholds_match_reference(scale: float):
    v = 3000
    x = torch.randn(4, v, generator=torch.Generator().manual_seed(11)) * scale
    ks, tps = [0, 2500, 40, 0], [0.9, 0.8, 1.0, 0.3]
    w = torch.exp(x - x.max(dim=-1, keepdim=True).values)
    thr = Sampler()._thresholds(x, w, ks, tps)
    for r in range(4):
        assert thr[r].item() == pytest.approx(_reference_threshold(x[r], ks[r], tps[r]), abs=1e-6)


def test_seeded_top_p_invariant_to_width_and_ties():
    """Prefilter vs full sort vs wider topk, with bf16-style tied logits: same tokens."""
    v = 2048  # > Sampler.TOP_P_PREFILTER, so the prefilter and the fallback both run
    gen = torch.Generator().manual_seed(21)
    peaked = (torch.randn(1, v, generator=gen) * 4).bfloat16().float()  # many exact ties
    flat = torch.randn(1, v, generator=gen) * 0.01
    target = SamplingParams(temperature=0.8, top_p=0.9, min_p=0.01, seed=5)

    def tokens(companions: list[tuple[torch.Tensor, SamplingParams]]) -> list[int]:
        g = torch.Generator().manual_seed(5)
        out = []
        for _ in range(15):
            rows = [peaked] + [c[0] for c in companions]
            ps = [target] + [c[1] for c in companions]
            batch = make_batch(ps, generators=[g] + [None] * len(companions))
            out.append(Sampler()(torch.cat(rows), batch).token_ids[0])
        return out

    alone = tokens([])
    assert len(set(alone)) > 2
    assert tokens([(flat, SamplingParams(top_p=0.95))]) == alone          # fallback sort row
    assert tokens([(peaked, SamplingParams(top_k=3000))]) == alone        # wider topk
    assert tokens([(flat, SamplingParams(top_k=5, top_p=0.5))]) == alone
