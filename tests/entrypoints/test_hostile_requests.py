"""Requests that used to kill the engine or answer 500: each is now a 400 (or, for a request
the executor fails alone, a 500 for that request only), and the server keeps serving with
its KV intact."""
from __future__ import annotations

import json
import threading

import httpx
import openai
import pytest

from tests.entrypoints.conftest import MODEL, Server

VOCAB = 261                     # random:tiny's byte tokenizer


@pytest.fixture(scope="module")
def srv():
    s = Server().start()
    yield s
    s.stop()


def post(server: Server, path: str, body: dict | bytes) -> httpx.Response:
    # json.dumps escapes lone surrogates (\ud800), which httpx's own encoder refuses to send
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(server.url + path, content=content,
                      headers={"content-type": "application/json"}, timeout=60)


def chat_body(content="hi", **kw) -> dict:
    return {"messages": [{"role": "user", "content": content}], "max_tokens": 2, **kw}


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def tool_call_body(arguments) -> dict:
    return {"max_tokens": 2, "messages": [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": arguments}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "ok"}]}


ENGINE_KILLERS = [  # each answered 500 engine_dead (and broke every later request) before
    ("/v1/completions", {"prompt": "hi", "max_tokens": 2, "seed": 18446744073709551616}),
    ("/v1/completions", {"prompt": "hi", "max_tokens": 2, "seed": -(10 ** 30)}),
    ("/v1/completions", {"prompt": "hi", "max_tokens": 2, "seed": 1e30}),
    ("/v1/completions", {"prompt": "hi", "max_tokens": 2, "repetition_penalty": 1e-300}),
    ("/v1/completions", {"prompt": "hi", "max_tokens": 4, "min_tokens": 2, "temperature": 1.0,
                         "stop_token_ids": list(range(VOCAB))}),
]
FIVE_HUNDREDS = [   # each answered a plain 500 before
    ("/v1/completions", {"prompt": "\ud800abc", "max_tokens": 2}),
    ("/v1/completions", {"prompt": ["ok", "x\udfffy"], "max_tokens": 2}),
    ("/v1/chat/completions", chat_body("\ud800abc")),
    ("/v1/chat/completions", chat_body([{"type": "text", "text": "a\udc00"}])),
    ("/v1/chat/completions", tool_call_body(nested(100_000))),          # RecursionError
    ("/v1/chat/completions", tool_call_body(nested(70))),
]
ACCEPTED_BEFORE = [  # each was accepted (and did something else than asked) before
    ("/v1/completions", {"prompt": [True], "max_tokens": 2}),              # became token id 1
    ("/v1/completions", {"prompt": [1, 2], "max_tokens": True}),
    ("/v1/completions", {"prompt": "hi", "max_tokens": 2, "stop_token_ids": [VOCAB]}),
    ("/v1/completions", {"prompt": "hi", "max_tokens": 2, "stream": 1}),
    ("/v1/completions", {"prompt": "hi", "max_tokens": 2, "continuum": {"program_id": "\ud800"}}),
    ("/v1/chat/completions", chat_body(extra={"deep": json.loads(nested(80))})),
    ("/v1/completions", {"prompt": "hi", "max_tokens": 2, "stop": ["x\udc00"]}),
]


@pytest.mark.parametrize("path,body", ENGINE_KILLERS + FIVE_HUNDREDS + ACCEPTED_BEFORE)
def test_hostile_request_is_a_400_and_the_server_keeps_serving(srv, path, body):
    r = post(srv, path, body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["message"]
    assert "traceback" not in r.text.lower() and ".py" not in r.text
    assert httpx.get(srv.url + "/health").status_code == 200
    ok = post(srv, "/v1/completions", {"prompt": "fine", "max_tokens": 3, "ignore_eos": True})
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 3
    kv = srv.wait_idle()
    assert kv["ok"], kv


def test_a_request_the_engine_fails_gets_500_and_the_others_finish(srv):
    """A fault only one request triggers (injected into the runner): that request alone gets a
    500 ``request_failed``; a stream running beside it finishes; /health stays 200."""
    runner = srv.llm_engine.runner
    real = runner.execute
    streaming = threading.Event()

    def execute(out):
        if any("POISON" in srv.llm_engine.tokenizer.decode(s.request.prompt_token_ids)
               for s in out.scheduled):
            raise RuntimeError("injected fault")
        return real(out)

    client = openai.OpenAI(base_url=srv.url + "/v1", api_key="x", max_retries=0, timeout=60)
    result = {}

    def stream_beside():
        chunks = client.completions.create(model=MODEL, prompt="steady", max_tokens=40, stream=True,
                                           extra_body={"ignore_eos": True})
        n = 0
        for c in chunks:
            n += 1
            streaming.set()
            result["finish"] = c.choices[0].finish_reason or result.get("finish")
        result["chunks"] = n

    runner.execute = execute
    try:
        t = threading.Thread(target=stream_beside)
        t.start()
        assert streaming.wait(60)
        with pytest.raises(openai.InternalServerError) as e:
            client.completions.create(model=MODEL, prompt="POISON pill", max_tokens=5)
        assert e.value.body["code"] == "request_failed"
        assert "injected" not in e.value.body["message"]          # the cause stays in the log
        t.join(60)
        assert result == {"chunks": 40, "finish": "length"}
        assert httpx.get(srv.url + "/health").status_code == 200
    finally:
        runner.execute = real
    assert client.completions.create(model=MODEL, prompt="after", max_tokens=2).usage.completion_tokens >= 1
    kv = srv.wait_idle()
    assert kv["ok"], kv
