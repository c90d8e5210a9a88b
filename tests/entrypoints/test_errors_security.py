"""API key, body limit, and every kind of bad input: OpenAI-format errors, no tracebacks, and
the server keeps serving afterwards."""
import socket

import httpx
import openai
import pytest

from continuum.sampling_params import MAX_STOP_STRING_CHARS, MAX_STOP_STRINGS, MAX_STOP_TOKEN_IDS
from tests.entrypoints.conftest import MODEL, Server

KEY = "sk-test-123"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def keyed():
    s = Server(api_key=KEY, max_body_bytes=64 * 1024).start()
    yield s
    s.stop()


def _client(server, key=KEY):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=30)


def _assert_error(r: httpx.Response, status: int, type_: str | None = "invalid_request_error"):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if type_:
        assert err["type"] == type_
    low = r.text.lower()
    assert "traceback" not in low and ".py" not in low and "pydantic" not in low
    return err


def test_api_key_accepted_and_refused(keyed):
    r = _client(keyed).completions.create(model=MODEL, prompt="hi", max_tokens=2)
    assert r.usage.completion_tokens >= 1
    for bad in ("wrong", KEY + "x", ""):
        with pytest.raises(openai.AuthenticationError) as e:
            _client(keyed, bad or "none").models.list()
        assert e.value.status_code == 401 and e.value.body["code"] == "invalid_api_key"
    r = httpx.post(keyed.url + "/v1/completions", json={"prompt": "hi"})
    _assert_error(r, 401)
    assert httpx.get(keyed.url + "/debug/kv").status_code == 401
    assert httpx.get(keyed.url + "/health").status_code == 200     # probes need no key


BAD_BODIES = [
    ("/v1/completions", {"model": MODEL}, 400, "prompt"),                        # missing field
    ("/v1/completions", {"prompt": "x", "max_tokens": "many"}, 400, "max_tokens"),
    ("/v1/completions", {"prompt": "x", "n": 2}, 400, "n"),
    ("/v1/completions", {"prompt": "x", "temperature": -1}, 400, None),
    ("/v1/completions", {"prompt": "x", "top_p": 0}, 400, None),
    ("/v1/completions", {"prompt": "x", "max_tokens": 0}, 400, "max_tokens"),
    ("/v1/completions", {"prompt": "x", "max_tokens": 5000}, 400, "max_tokens"),
    ("/v1/completions", {"prompt": "x", "logprobs": 99}, 400, None),
    ("/v1/completions", {"prompt": "x", "echo": True}, 400, "echo"),
    ("/v1/completions", {"prompt": []}, 400, "prompt"),
    ("/v1/completions", {"prompt": ""}, 400, "prompt"),
    ("/v1/completions", {"prompt": [10 ** 9]}, 400, None),                       # outside vocab
    ("/v1/completions", {"prompt": "x", "stop": [""]}, 400, None),
    ("/v1/completions", {"prompt": "x", "min_tokens": 9, "max_tokens": 3}, 400, None),
    ("/v1/completions", {"prompt": "x", "model": "gpt-9"}, 404, "model"),
    ("/v1/completions", {"prompt": "x", "continuum": {"program_id": ["x"]}}, 400, None),
    ("/v1/completions", {"prompt": "x", "cache_salt": ""}, 400, "cache_salt"),
    ("/v1/completions", {"prompt": "x", "cache_salt": "s" * 257}, 400, "cache_salt"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "cache_salt": 7},
     400, "cache_salt"),
    ("/v1/chat/completions", {"messages": []}, 400, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "wizard", "content": "x"}]}, 400, None),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
     400, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "tools": [{}]}, 400, None),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}],
                              "tools": [{"type": "function", "function": {"name": "f"}}],
                              "tool_choice": "required"}, 400, "tool_choice"),
    ("/v1/chat/completions", {"messages": [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{bad"}}]}]},
     400, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}],
                              "response_format": {"type": "json_object"}}, 400, "response_format"),
]


@pytest.mark.parametrize("path,body,status,param", BAD_BODIES)
def test_bad_bodies(keyed, path, body, status, param):
    err = _assert_error(httpx.post(keyed.url + path, json=body, headers=AUTH, timeout=30), status,
                        None)
    if status == 404:
        assert err["code"] == "model_not_found"
    if param:
        assert err["param"] == param, err


@pytest.mark.parametrize("field,value,message", [
    ("stop", ["x"] * (MAX_STOP_STRINGS + 1),
     f"at most {MAX_STOP_STRINGS} stop strings are allowed, got {MAX_STOP_STRINGS + 1}"),
    ("stop", ["ok", "y" * (MAX_STOP_STRING_CHARS + 1)],
     f"at most {MAX_STOP_STRING_CHARS} characters, stop[1] has {MAX_STOP_STRING_CHARS + 1}"),
    ("stop_token_ids", [5] * (MAX_STOP_TOKEN_IDS + 1),
     f"at most {MAX_STOP_TOKEN_IDS} stop_token_ids are allowed, got {MAX_STOP_TOKEN_IDS + 1}"),
])
def test_stop_lists_are_bounded(keyed, field, value, message):
    """A stop list that would slow every request's steps is refused up front, with the limit."""
    for path, body in (("/v1/completions", {"prompt": "x"}),
                       ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]})):
        r = httpx.post(keyed.url + path, json={**body, field: value, "max_tokens": 2},
                       headers=AUTH, timeout=30)
        assert message in _assert_error(r, 400)["message"]


def test_largest_stop_list_is_served(keyed):
    r = _client(keyed).completions.create(model=MODEL, prompt="hi", max_tokens=2,
                                          stop=["z" * MAX_STOP_STRING_CHARS] * MAX_STOP_STRINGS)
    assert r.choices[0].finish_reason in ("stop", "length")


def test_malformed_requests(keyed):
    post = lambda path, **kw: httpx.post(keyed.url + path, headers={**AUTH, **kw.pop("h", {})},
                                         timeout=30, **kw)
    _assert_error(post("/v1/completions", content=b"{not json", h={"content-type": "application/json"}), 400)
    _assert_error(post("/v1/completions", content=b"[1, 2]", h={"content-type": "application/json"}), 400)
    _assert_error(httpx.get(keyed.url + "/v1/nope", headers=AUTH), 404)
    _assert_error(httpx.get(keyed.url + "/v1/completions", headers=AUTH), 405)
    # body over the limit: by Content-Length, and chunked (no Content-Length)
    big = {"prompt": "x" * 100_000}
    _assert_error(post("/v1/completions", json=big), 413)
    _assert_error(post("/v1/completions", content=iter([b'{"prompt": "', b"x" * 100_000, b'"}'])), 413)


def test_prompt_too_long_names_both_lengths(keyed):
    with pytest.raises(openai.BadRequestError) as e:
        _client(keyed).completions.create(model=MODEL, prompt="y" * 1500, max_tokens=1)
    msg = e.value.body["message"]
    assert "1500" in msg and "1024" in msg
    with pytest.raises(openai.BadRequestError) as e:
        _client(keyed).chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "z" * 2000}])
    assert "1024" in e.value.body["message"]


def test_garbage_on_the_socket_then_still_serving(keyed):
    with socket.create_connection(("127.0.0.1", keyed.port), timeout=5) as s:
        s.sendall(b"\x00\xffNOT HTTP AT ALL\r\n\r\n")
        s.recv(1024)
    r = _client(keyed).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "ok"}],
                                               max_tokens=3)
    assert r.choices[0].message.role == "assistant"
    kv = keyed.wait_idle(AUTH)
    assert kv["ok"], kv
