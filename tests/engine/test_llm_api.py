"""The LLM() API end to end: the real default model, typed errors, sampling through the engine."""
import pytest

from continuum.errors import (InvalidRequestError, ModelLoadError, PromptTooLongError, ConfigError)
from continuum.llm import LLM
from continuum.sampling_params import SamplingParams
from tests.conftest import requires_smollm2


@pytest.fixture(scope="module")
def smol():
    return LLM(kv_cache_memory="256MiB")


@pytest.fixture(scope="module")
def tiny(hf_checkpoints):
    return LLM(hf_checkpoints["llama"][0], dtype="float32", kv_cache_memory="32MiB", max_model_len=256)


@requires_smollm2
def test_smollm2_knows_the_capital_of_france(smol):
    out = smol.chat([{"role": "user", "content": "What is the capital of France?"}],
                    SamplingParams(temperature=0, max_tokens=32), use_tqdm=False)[0]
    assert "Paris" in out.outputs[0].text
    assert out.outputs[0].finish_reason == "stop"          # ended on <|im_end|>, not on length
    assert "<|im_end|>" not in out.outputs[0].text
    smol.engine.check_integrity()


@requires_smollm2
def test_smollm2_stop_string_and_logprobs(smol):
    out = smol.chat([{"role": "user", "content": "Count from 1 to 10, separated by commas."}],
                    SamplingParams(temperature=0, max_tokens=40, stop=["5"], logprobs=3), use_tqdm=False)[0]
    c = out.outputs[0]
    assert c.finish_reason == "stop" and c.stop_reason == "5"
    assert "5" not in c.text and "4" in c.text
    assert len(c.logprobs) == len(c.token_ids)
    for tok, entry in zip(c.token_ids, c.logprobs):
        assert tok in entry and len(entry) >= 3
        assert entry[tok].rank == 1                         # greedy picks the best
    smol.engine.check_integrity()


def test_seeded_sampling_is_reproducible_and_batch_independent(tiny):
    p = SamplingParams(temperature=1.0, top_p=0.9, seed=1234, max_tokens=16, ignore_eos=True)
    alone = tiny.generate([[5, 6, 7, 8]], p, use_tqdm=False)[0].outputs[0].token_ids
    others = SamplingParams(temperature=1.0, max_tokens=16, ignore_eos=True)
    batch = tiny.generate([[9, 9, 9], [5, 6, 7, 8], [1, 2]], [others, p, others], use_tqdm=False)
    assert batch[1].outputs[0].token_ids == alone
    other_seed = SamplingParams(temperature=1.0, top_p=0.9, seed=99, max_tokens=16, ignore_eos=True)
    assert tiny.generate([[5, 6, 7, 8]], other_seed, use_tqdm=False)[0].outputs[0].token_ids != alone
    tiny.engine.check_integrity()


def test_outputs_in_prompt_order_with_metrics(tiny):
    outs = tiny.generate(["abc", "a much longer prompt than the first", "z"],
                         SamplingParams(temperature=0, max_tokens=5, ignore_eos=True), use_tqdm=False)
    assert [o.prompt for o in outs] == ["abc", "a much longer prompt than the first", "z"]
    for o in outs:
        assert o.finished and len(o.outputs[0].token_ids) == 5 and o.outputs[0].finish_reason == "length"
        m = o.metrics
        assert m.arrival_time <= m.first_scheduled_time <= m.first_token_time <= m.finished_time


def test_bad_input_raises_typed_errors_and_leaves_engine_clean(tiny):
    with pytest.raises(PromptTooLongError) as e:
        tiny.generate([[1] * 300], use_tqdm=False)
    assert "300" in str(e.value) and "256" in str(e.value)
    with pytest.raises(InvalidRequestError):
        tiny.generate([[]], use_tqdm=False)
    with pytest.raises(InvalidRequestError):
        tiny.generate([[10**9]], use_tqdm=False)
    with pytest.raises(InvalidRequestError):
        SamplingParams(temperature=-1)
    with pytest.raises(InvalidRequestError):
        SamplingParams(top_p=0)
    with pytest.raises(InvalidRequestError):
        tiny.generate(["ok", "ok"], [SamplingParams()], use_tqdm=False)
    # a batch with one bad prompt queues nothing
    with pytest.raises(PromptTooLongError):
        tiny.generate([[1, 2, 3], [1] * 300], use_tqdm=False)
    assert not tiny.engine.has_unfinished_requests()
    tiny.engine.check_integrity()
    # and the engine still works
    assert len(tiny.generate(["ok"], SamplingParams(max_tokens=2, ignore_eos=True), use_tqdm=False)[0]
               .outputs[0].token_ids) == 2


def test_abort_frees_blocks(tiny):
    eng = tiny.engine
    eng.add_request([1, 2, 3] * 20, SamplingParams(max_tokens=100, ignore_eos=True), request_id="x")
    eng.step()
    assert eng.scheduler.kv.pool.counts()["in_use"] > 0
    eng.abort_request("x")
    assert not eng.has_unfinished_requests()
    eng.check_integrity()


def test_model_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="no-such-dir"):
        LLM(str(tmp_path / "no-such-dir"))
    with pytest.raises(ConfigError, match="unknown engine argument"):
        LLM("random:tiny", kv_cache_mem="1GiB")
    with pytest.raises(ConfigError):
        LLM("random:tiny", kv_cache_memory="lots")
