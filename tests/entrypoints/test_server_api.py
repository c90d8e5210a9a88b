"""The OpenAI API through the official client against a real uvicorn server (random:tiny)."""
import httpx

from tests.entrypoints.conftest import MODEL

NO_EOS = {"ignore_eos": True}


def test_models_health_version_metrics(server, client):
    models = client.models.list().data
    assert [m.id for m in models] == [MODEL]
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    assert "version" in httpx.get(server.url + "/version").json()
    text = httpx.get(server.url + "/metrics").text
    for name in ("continuum_http_requests_total", "continuum_engine_kv_usage",
                 "continuum_engine_prefix_cache_hits_total", "continuum_engine_preemptions_total",
                 "continuum_engine_queueing_delay_seconds_total", "continuum_requests_in_flight"):
        assert name in text, name


def test_completion_and_usage(server, client):
    r = client.completions.create(model=MODEL, prompt="hello world", max_tokens=7, extra_body=NO_EOS)
    c = r.choices[0]
    assert r.object == "text_completion" and c.finish_reason == "length"
    assert r.usage.prompt_tokens == len("hello world") and r.usage.completion_tokens == 7
    assert r.usage.total_tokens == r.usage.prompt_tokens + 7
    assert r.usage.prompt_tokens_details.cached_tokens == 0
    # token-id prompts, a batch, and seeded sampling reproducibility
    kw = dict(model=MODEL, max_tokens=6, temperature=1.0, seed=7, extra_body=NO_EOS)
    a = client.completions.create(prompt=[104, 105, 106], **kw).choices[0].text
    b = client.completions.create(prompt=[[1, 2, 3], [104, 105, 106]], **kw)
    assert [ch.index for ch in b.choices] == [0, 1] and b.choices[1].text == a
    assert b.usage.completion_tokens == 12
    server.wait_idle()


def test_completion_max_tokens_defaults_to_16(server, client):
    """As OpenAI and vLLM: 16 tokens without ``max_tokens``; a prompt that leaves fewer gets
    the rest of the context (max_model_len 1024 here), not an error."""
    r = client.completions.create(model=MODEL, prompt="hello world", extra_body=NO_EOS)
    assert (r.usage.completion_tokens, r.choices[0].finish_reason) == (16, "length")
    r = client.completions.create(model=MODEL, prompt=[65] * 1015, extra_body=NO_EOS)
    assert (r.usage.completion_tokens, r.choices[0].finish_reason) == (9, "length")
    server.wait_idle()


def test_completion_stream_logprobs_stop(server, client):
    greedy = dict(model=MODEL, prompt="abc", max_tokens=12, temperature=0, extra_body=NO_EOS)
    full = client.completions.create(**greedy, logprobs=2)
    lp = full.choices[0].logprobs
    assert len(lp.tokens) == 12 == len(lp.token_logprobs) == len(lp.top_logprobs)
    assert "".join(lp.tokens) == full.choices[0].text
    chunks = list(client.completions.create(**greedy, stream=True,
                                            stream_options={"include_usage": True}))
    assert "".join(ch.choices[0].text for ch in chunks if ch.choices) == full.choices[0].text
    assert chunks[-1].usage.completion_tokens == 12 and not chunks[-1].choices
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "length"
    # a stop string taken from the greedy output cuts it there
    text = full.choices[0].text
    stop = next((text[i:i + 1] for i in range(3, len(text)) if text[i:i + 1].isprintable()
                 and text[i:i + 1] not in text[:i]), None)
    if stop:
        r = client.completions.create(**greedy, stop=[stop])
        assert r.choices[0].finish_reason == "stop" and r.choices[0].text == text[:text.index(stop)]



def test_completion_return_token_ids(server, client):
    """vLLM's ``return_token_ids``: the prompt's ids once, the output ids (all of them, or each
    chunk's new ones when streaming), identical between the two modes under greedy decoding."""
    ids = list(range(40, 80))
    kw = dict(model=MODEL, prompt=ids, max_tokens=9, temperature=0)
    full = client.completions.create(**kw, extra_body={**NO_EOS, "return_token_ids": True}).choices[0]
    assert full.model_extra["prompt_token_ids"] == ids and len(full.model_extra["token_ids"]) == 9
    chunks = [ch.choices[0] for ch in client.completions.create(
        **kw, stream=True, extra_body={**NO_EOS, "return_token_ids": True}) if ch.choices]
    assert chunks[0].model_extra["prompt_token_ids"] == ids
    assert all("prompt_token_ids" not in ch.model_extra for ch in chunks[1:])
    assert [t for ch in chunks for t in ch.model_extra["token_ids"]] == full.model_extra["token_ids"]
    plain = client.completions.create(**kw, extra_body=NO_EOS).choices[0]       # off by default
    assert "token_ids" not in (plain.model_extra or {}) and plain.text == full.text
    server.wait_idle()

def test_chat_plain_and_stream(server, client):
    msgs = [{"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "SCRIPT[plain]"}]}]
    r = client.chat.completions.create(model=MODEL, messages=msgs)
    assert r.choices[0].message.content == "Paris is the capital of France."
    assert r.choices[0].finish_reason == "stop" and r.choices[0].message.tool_calls is None
    chunks = list(client.chat.completions.create(model=MODEL, messages=msgs, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == r.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == "stop"
    # max_completion_tokens and logprobs in the chat format
    r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                       max_completion_tokens=5, logprobs=True, top_logprobs=3,
                                       temperature=0, extra_body=NO_EOS)
    content = r.choices[0].logprobs.content
    assert r.usage.completion_tokens == 5 and len(content) == 5
    assert all(len(t.top_logprobs) == 3 for t in content)
    assert all(t.top_logprobs[0].logprob >= t.top_logprobs[-1].logprob for t in content)
    server.wait_idle()


def test_cache_salt_isolates_prefix_cache_hits(server, client):
    prompt = "isolated by cache_salt: 39 bytes long!!"       # 2 full blocks + 7 tokens
    assert len(prompt) == 39

    def cached(**salt) -> int:
        r = client.completions.create(model=MODEL, prompt=prompt, max_tokens=1, extra_body=salt)
        return r.usage.prompt_tokens_details.cached_tokens

    assert cached(cache_salt="tenant-a") == 0
    assert cached(cache_salt="tenant-b") == 0 and cached() == 0
    assert cached(cache_salt="tenant-a") == 32 and cached() == 32
    msgs = [{"role": "user", "content": prompt}]
    chat = [client.chat.completions.create(model=MODEL, messages=msgs, max_completion_tokens=1,
                                           extra_body={"cache_salt": "tenant-c"}) for _ in range(2)]
    assert [r.usage.prompt_tokens_details.cached_tokens > 0 for r in chat] == [False, True]
    server.wait_idle()


def test_vllm_sampling_extensions(server, client):
    r = client.completions.create(
        model=MODEL, prompt="xyz", max_tokens=8,
        extra_body={"ignore_eos": True, "min_tokens": 2, "top_k": 5, "min_p": 0.05,
                    "repetition_penalty": 1.1})
    assert r.usage.completion_tokens == 8
    r = client.completions.create(model=MODEL, prompt="xyz", max_tokens=8, temperature=0,
                                  extra_body={"stop_token_ids": list(range(261))})
    assert r.choices[0].finish_reason == "stop" and r.usage.completion_tokens == 1
