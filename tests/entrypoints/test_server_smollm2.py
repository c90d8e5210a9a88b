"""The server with the real default model (SmolLM2-135M-Instruct): its own chat template,
a sensible answer, streaming identical to non-streaming, prefix hits on a repeated prompt."""
import openai
import pytest

from tests.conftest import requires_smollm2
from tests.entrypoints.conftest import Server

NAME = "SmolLM2-135M-Instruct"
pytestmark = requires_smollm2


@pytest.fixture(scope="module")
def smol():
    s = Server(engine_kw={"model": None, "max_model_len": 2048, "kv_cache_memory": "128MiB"},
               model_name=NAME).start()
    yield s
    s.stop()


def test_smollm2_over_http(smol):
    client = openai.OpenAI(base_url=smol.url + "/v1", api_key="x", max_retries=0, timeout=60)
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    r = client.chat.completions.create(model=NAME, messages=msgs, temperature=0, max_tokens=32)
    text = r.choices[0].message.content
    assert "Paris" in text and r.choices[0].finish_reason == "stop"
    assert "<|im_end|>" not in text
    chunks = client.chat.completions.create(model=NAME, messages=msgs, temperature=0, max_tokens=32,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    # the second identical prompt is served from the prefix cache (full blocks only)
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens >= 16
    kv = smol.wait_idle()
    assert kv["ok"]
