"""One request must never take the engine down: hostile sampling parameters are refused at
``add_request``, the sampler never yields an id outside the vocabulary, and a request that
makes the executor fail is failed alone (finish_reason "error") while the others finish with
exactly the tokens they would have had, the failed chunk's KV never serves a prefix hit, and
no block leaks."""
from __future__ import annotations

import random

import pytest
import torch

from continuum.config import EngineArgs
from continuum.engine.engine import LLMEngine
from continuum.engine.sampler import Sampler, SamplingBatch
from continuum.errors import InvalidRequestError
from continuum.request import Request
from continuum.sampling_params import SamplingParams

ENGINE_KW = dict(model="random:tiny", dtype="float32", device="cpu", max_model_len=512,
                 kv_cache_memory="4MiB", max_num_batched_tokens=512)
GREEDY = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)


@pytest.fixture()
def engine():
    return LLMEngine(EngineArgs.from_kwargs(**ENGINE_KW))


def run(engine: LLMEngine) -> dict:
    """Step until idle; final outputs by request id. Integrity is checked after every step."""
    finals = {}
    while engine.has_unfinished_requests():
        for out in engine.step():
            if out.finished:
                finals[out.request_id] = out
        engine.check_integrity()
    return finals


def assert_idle(engine: LLMEngine) -> None:
    engine.check_integrity()
    pool = engine.scheduler.kv.pool
    assert pool.num_free_blocks == pool.num_blocks, "leaked KV blocks"


def fail_when(engine: LLMEngine, bad_id: str, exc=RuntimeError("injected")) -> list:
    """Make the runner raise whenever request ``bad_id`` is in the batch (a stand-in for a bug
    that only that request triggers). Returns the list of batch sizes it saw."""
    real, seen = engine.runner.execute, []

    def execute(out):
        seen.append(len(out.scheduled))
        if any(s.request.request_id == bad_id for s in out.scheduled):
            raise exc
        return real(out)

    engine.runner.execute = execute
    return seen


# -- refused at the door ---------------------------------------------------------------------
@pytest.mark.parametrize("kw,match", [
    (dict(seed=18446744073709551616), "seed"),
    (dict(seed=10**30), "seed"),
    (dict(seed=-(10**30)), "seed"),
    (dict(seed=True), "seed"),
    (dict(repetition_penalty=1e-300), "repetition_penalty"),
    (dict(repetition_penalty=float("nan")), "repetition_penalty"),
    (dict(temperature=float("inf")), "temperature"),
    (dict(top_p=float("nan")), "top_p"),
    (dict(max_tokens=True), "max_tokens"),
    (dict(top_k=True), "top_k"),
    (dict(logprobs=True), "logprobs"),
    (dict(stop_token_ids=[True]), "stop_token_ids"),
    (dict(stop=["\ud800x"]), "surrogate"),
    (dict(stop="x\udc00"), "surrogate"),
])
def test_bad_sampling_params_are_refused(kw, match):
    with pytest.raises(InvalidRequestError, match=match):
        SamplingParams(**kw)


def test_seed_limits_are_accepted(engine):
    for seed in (-(2**63), 2**63 - 1, 0):
        engine.add_request([1, 2, 3], SamplingParams(temperature=1.0, seed=seed, max_tokens=2),
                           request_id=str(seed))
    assert all(o.outputs[0].finish_reason == "length" for o in run(engine).values())
    assert_idle(engine)


def test_engine_refuses_what_only_it_can_check(engine):
    vocab = engine.vocab_size
    cases = [
        ([1, 2], SamplingParams(stop_token_ids=[vocab])),                          # outside vocab
        ([1, 2], SamplingParams(temperature=1.0, min_tokens=2, max_tokens=4,
                                stop_token_ids=list(range(vocab)))),              # bans every id
        ([True, 2], SamplingParams()),                                            # bool as an id
        ("\ud800abc", SamplingParams()),                                          # lone surrogate
    ]
    for prompt, params in cases:
        with pytest.raises(InvalidRequestError):
            engine.add_request(prompt, params)
    assert not engine.has_unfinished_requests()
    # all but one id banned is fine: min_tokens forces the one that is left
    last = vocab - 1
    engine.add_request([1, 2], SamplingParams(temperature=1.0, min_tokens=3, max_tokens=3, seed=1,
                                              stop_token_ids=list(range(last))), request_id="r")
    assert run(engine)["r"].outputs[0].token_ids == [last] * 3
    assert_idle(engine)


# -- the sampler -----------------------------------------------------------------------------
def _random_params(rng: random.Random, vocab: int) -> SamplingParams:
    return SamplingParams(
        temperature=rng.choice([0.0, 1e-5, 2e-5, 0.7, 1.0, 100.0]),
        top_p=rng.choice([1.0, 0.9, 1e-9]), top_k=rng.choice([-1, 0, 1, 5, vocab, 10**9]),
        min_p=rng.choice([0.0, 0.5, 1.0]), seed=rng.choice([None, 0, 2**63 - 1, -(2**63)]),
        presence_penalty=rng.choice([0.0, -2.0, 2.0]), frequency_penalty=rng.choice([0.0, -2.0, 2.0]),
        repetition_penalty=rng.choice([1.0, 0.01, 2.0]), min_tokens=rng.choice([0, 5]),
        max_tokens=8, stop_token_ids=rng.sample(range(vocab), rng.choice([0, 1, vocab - 1])),
        ignore_eos=rng.random() < 0.5, logprobs=rng.choice([None, 0, 20]))


def test_sampler_never_leaves_the_vocabulary():
    """Random (valid) parameters on pathological logits: every id is in [0, V), and a banned
    id is never chosen while an unbanned one has a finite logit."""
    rng, vocab, sampler = random.Random(0), 40, Sampler()
    specials = [lambda: torch.full((vocab,), float("-inf")), lambda: torch.full((vocab,), float("nan")),
                lambda: torch.full((vocab,), 1e38), lambda: torch.zeros(vocab),
                lambda: torch.randn(vocab) * 1e4]
    for case in range(300):
        rows = rng.randint(1, 6)
        params = [_random_params(rng, vocab) for _ in range(rows)]
        logits = torch.randn(rows, vocab) * rng.choice([1.0, 30.0])
        for r in range(rows):
            if rng.random() < 0.3:
                logits[r] = rng.choice(specials)()
        outs = [[rng.randrange(vocab) for _ in range(rng.randint(0, 6))] for _ in range(rows)]
        gens = [torch.Generator().manual_seed(p.seed) if p.seed is not None else None for p in params]
        batch = SamplingBatch(params, gens, outs, [[1, 2, 3]] * rows, eos_token_ids=[0])
        got = sampler(logits, batch)
        for r, (tok, p) in enumerate(zip(got.token_ids, params)):
            assert 0 <= tok < vocab, (case, r, tok)
            banned = set(p.stop_token_ids) | (set() if p.ignore_eos else {0})
            finite_allowed = [t for t in range(vocab) if t not in banned
                              and torch.isfinite(logits[r, t])]
            if len(outs[r]) < p.min_tokens and finite_allowed:
                assert tok not in banned, (case, r, tok)


# -- a request the executor fails alone ----------------------------------------------------
PROMPTS = {"a": [5, 6, 7, 8] * 10, "b": [9, 10, 11] * 12, "c": [12, 13] * 20}


def _reference(prompts: dict) -> dict:
    eng = LLMEngine(EngineArgs.from_kwargs(**ENGINE_KW))
    for rid, p in prompts.items():
        eng.add_request(p, GREEDY, request_id=rid)
    return {rid: o.outputs[0].token_ids for rid, o in run(eng).items()}


def test_failing_request_is_failed_alone(engine):
    ref = _reference({k: v for k, v in PROMPTS.items() if k != "b"})
    seen = fail_when(engine, "b")
    for rid, p in PROMPTS.items():
        engine.add_request(p, GREEDY, request_id=rid)
    finals = run(engine)
    assert finals["b"].outputs[0].finish_reason == "error" and "injected" in finals["b"].error
    assert finals["b"].outputs[0].token_ids == []
    for rid in ("a", "c"):
        assert finals[rid].error is None and finals[rid].outputs[0].token_ids == ref[rid]
    assert seen[:4] == [3, 1, 1, 1]           # the batch, then each request alone
    assert_idle(engine)
    # The failed prefill registered full blocks whose KV was never written: none may be hit.
    probe = Request("probe", PROMPTS["b"], GREEDY, 0.0)
    assert engine.scheduler.kv.get_computed_blocks(probe) == ([], 0)


def test_failed_prefill_leaves_no_hit_and_a_retry_is_exact(engine):
    """The same prompt sent again after the failure recomputes it (no hit on unwritten KV) and
    gets the reference tokens."""
    ref = _reference({"b": PROMPTS["b"]})["b"]
    real = engine.runner.execute
    fail_when(engine, "b")
    engine.add_request(PROMPTS["b"], GREEDY, request_id="b")
    assert run(engine)["b"].outputs[0].finish_reason == "error"
    engine.runner.execute = real
    engine.add_request(PROMPTS["b"], GREEDY, request_id="b2")
    out = run(engine)["b2"]
    assert out.num_cached_tokens == 0 and out.outputs[0].token_ids == ref
    assert_idle(engine)


def test_request_sharing_the_failed_blocks_in_the_same_step_is_recomputed(engine):
    """Two identical prompts admitted in one step: the second hits the blocks the first
    registered. When the first fails, the second is preempted (it would read KV nobody
    wrote) and recomputes: its tokens equal the reference."""
    ref = _reference({"twin": PROMPTS["a"]})["twin"]
    fail_when(engine, "first")
    engine.add_request(PROMPTS["a"], GREEDY, request_id="first")
    engine.add_request(PROMPTS["a"], GREEDY, request_id="twin")
    finals = run(engine)
    assert finals["first"].outputs[0].finish_reason == "error"
    assert finals["twin"].outputs[0].token_ids == ref
    assert finals["twin"].metrics.num_preemptions == 1
    assert_idle(engine)


def test_failure_during_decode_keeps_the_written_prefix(engine):
    """A transient batch failure (every request succeeds alone) fails nobody; a request that
    fails in decode keeps its earlier, written blocks usable for later hits."""
    real = engine.runner.execute
    calls = [0]

    def execute(out):
        calls[0] += 1
        batch_has_a = any(s.request.request_id == "a" for s in out.scheduled)
        if calls[0] == 2 or (calls[0] >= 6 and batch_has_a):
            raise RuntimeError("injected in decode")
        return real(out)

    engine.runner.execute = execute
    engine.add_request(PROMPTS["a"], GREEDY, request_id="a")
    engine.add_request(PROMPTS["c"], GREEDY, request_id="c")
    finals = run(engine)
    # calls: 1 prefill, 2 fails (3, 4 alone succeed), 5 decode, 6 fails (7: a fails alone)
    assert finals["a"].outputs[0].finish_reason == "error"
    assert finals["a"].outputs[0].token_ids == _reference({"a": PROMPTS["a"]})["a"][:3]
    assert finals["c"].outputs[0].token_ids == _reference({"c": PROMPTS["c"]})["c"]
    engine.runner.execute = real
    engine.add_request(PROMPTS["a"], GREEDY, request_id="again")
    again = run(engine)["again"]
    assert again.num_cached_tokens == 32                     # the two full prompt blocks
    assert again.outputs[0].token_ids == _reference({"a": PROMPTS["a"]})["a"]
    assert_idle(engine)


def test_out_of_vocabulary_sample_fails_only_that_request(engine):
    real = engine.runner.execute

    def execute(out):
        toks, lps = real(out)
        return [engine.vocab_size if (t is not None and s.request.request_id == "b") else t
                for s, t in zip(out.scheduled, toks)], lps

    engine.runner.execute = execute
    for rid, p in PROMPTS.items():
        engine.add_request(p, GREEDY, request_id=rid)
    finals = run(engine)
    assert finals["b"].outputs[0].finish_reason == "error" and "vocabulary" in finals["b"].error
    assert [finals[r].outputs[0].finish_reason for r in ("a", "c")] == ["length", "length"]
    assert_idle(engine)


def test_detokenizer_failure_fails_only_that_request(engine):
    states = engine._states
    engine.add_request(PROMPTS["a"], GREEDY, request_id="a")
    engine.add_request(PROMPTS["b"], GREEDY, request_id="b")

    def boom(*a, **k):
        raise UnicodeDecodeError("utf-8", b"", 0, 1, "injected")

    states["b"].detok.update = boom
    finals = run(engine)
    assert finals["b"].outputs[0].finish_reason == "error"
    assert finals["a"].outputs[0].finish_reason == "length"
    assert_idle(engine)


def test_failure_of_every_request_in_a_batch_is_the_engines():
    """Not narrowed to a request (every one fails alone too): the error propagates."""
    engine = LLMEngine(EngineArgs.from_kwargs(**ENGINE_KW))

    def broken(out):
        raise RuntimeError("the device is gone")

    engine.runner.execute = broken
    engine.add_request([1, 2, 3], GREEDY, request_id="x")
    engine.add_request([4, 5, 6], GREEDY, request_id="y")
    with pytest.raises(RuntimeError, match="device is gone"):
        engine.step()


def test_random_sampling_parameters_through_the_engine(engine):
    """Property test: random parameters, valid or not, thrown at the engine with a request
    stream: each is refused with InvalidRequestError or finishes normally; integrity holds
    after every step and nothing leaks."""
    rng = random.Random(7)
    vocab = engine.vocab_size
    pool = [None, True, -1, 0, 1, 2.5, 1e30, -1e30, float("nan"), float("inf"), 10**30, 2**63,
            "x", [], 1e-300]
    fields = ["temperature", "top_p", "top_k", "min_p", "seed", "presence_penalty",
              "frequency_penalty", "repetition_penalty", "max_tokens", "min_tokens", "logprobs"]
    accepted = refused = 0
    for i in range(150):
        kw = {}
        for f in rng.sample(fields, rng.randint(0, 5)):
            kw[f] = rng.choice(pool)
        if rng.random() < 0.3:
            kw["stop_token_ids"] = rng.sample(range(vocab + 5), rng.choice([1, 3, vocab]))
        if rng.random() < 0.3:
            kw["stop"] = rng.choice([["a"], ["\ud800"], [""], ["xy", "z"]])
        try:
            params = SamplingParams(**{k: v for k, v in kw.items() if v is not None})
            if params.max_tokens is None or params.max_tokens > 16:
                params.max_tokens = 16
            params.min_tokens = min(params.min_tokens, params.max_tokens)
            engine.add_request([rng.randrange(vocab) for _ in range(rng.randint(1, 40))], params,
                               request_id=f"r{i}")
            accepted += 1
        except InvalidRequestError:
            refused += 1
        if i % 10 == 9:
            for out in run(engine).values():
                assert out.error is None
                assert all(0 <= t < vocab for t in out.outputs[0].token_ids)
    run(engine)
    assert accepted > 20 and refused > 20
    assert_idle(engine)


def test_max_model_len_past_the_models_positions_is_refused():
    """random:tiny has 2048 positions: a longer max_model_len let a long request index past
    the rotary table (found by benchmarks/fuzz_server.py)."""
    from continuum.errors import ConfigError
    with pytest.raises(ConfigError, match="2048 positions"):
        LLMEngine(EngineArgs.from_kwargs(**{**ENGINE_KW, "max_model_len": 4096}))
