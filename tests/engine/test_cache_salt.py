"""cache_salt through the engine and LLM.generate: prefix-cache hits only between equal salts."""
import pytest

from continuum.errors import InvalidRequestError
from continuum.llm import LLM
from continuum.sampling_params import SamplingParams

PROMPT = list(range(1, 40))                     # 2 full blocks of 16 + 7 tokens
ONE = SamplingParams(max_tokens=1, ignore_eos=True)


@pytest.fixture(scope="module")
def llm():
    return LLM("random:tiny", dtype="float32", device="cpu", kv_cache_memory="1MiB")


def cached_tokens(llm, prompt, **kw) -> int:
    eng = llm.engine
    req = eng.add_request(prompt, ONE, **kw)
    while eng.has_unfinished_requests():
        eng.step()
    return max(req.num_cached_tokens, 0)


def test_engine_shares_prefix_blocks_only_between_equal_salts(llm):
    assert cached_tokens(llm, PROMPT, cache_salt="a") == 0
    assert cached_tokens(llm, PROMPT, cache_salt="b") == 0
    assert cached_tokens(llm, PROMPT) == 0
    assert cached_tokens(llm, PROMPT, cache_salt="a") == 32
    # vLLM's prompt dict carries the salt too (how the server passes it)
    assert cached_tokens(llm, {"prompt_token_ids": PROMPT, "cache_salt": "b"}) == 32
    assert cached_tokens(llm, PROMPT) == 32
    llm.engine.check_integrity()


def test_llm_generate_accepts_a_salted_prompt_dict(llm):
    prompt = [t + 100 for t in PROMPT]            # not cached by the test above
    outs = llm.generate([{"prompt_token_ids": prompt, "cache_salt": s} for s in ("x", "x", "y")],
                        ONE, use_tqdm=False)
    # blocks are registered when allocated: the second "x" request of the step already hits
    assert [o.num_cached_tokens for o in outs] == [0, 32, 0]


@pytest.mark.parametrize("prompt,kw", [
    (PROMPT, {"cache_salt": ""}),
    (PROMPT, {"cache_salt": 5}),
    (PROMPT, {"cache_salt": "\ud800"}),          # no UTF-8 bytes to hash
    ({"prompt_token_ids": PROMPT, "cache_salt": "a"}, {"cache_salt": "b"}),
    ({"cache_salt": "a"}, {}),
])
def test_bad_salts_are_refused_and_nothing_is_queued(llm, prompt, kw):
    with pytest.raises(InvalidRequestError):
        llm.engine.add_request(prompt, ONE, **kw)
    assert not llm.engine.has_unfinished_requests()
