"""Zero-config programs through the real server and the official ``openai`` client: requests
that send no program id are recognised as programs when they continue an earlier turn."""
from __future__ import annotations


import httpx
import openai
import pytest

from continuum.entrypoints.openai.recognition import assign
from continuum.request import AgentInfo
from tests.entrypoints.conftest import MODEL, Server
from tests.polling import HANG_GUARD_S

SYSTEM = "You are a helpful agent. " * 8          # shared by every user below



def _program(r) -> dict:
    return r.usage.model_dump()["continuum"]


@pytest.fixture(scope="module")
def server():
    s = Server().start()
    yield s
    s.stop()


def _chat_turn(client, messages, **kw):
    r = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=6,
                                       temperature=1.0, **kw)
    return r, {"role": "assistant", "content": r.choices[0].message.content}


def test_conversations_sharing_a_system_prompt_are_separate_programs(server):
    client = server.openai_client()
    before = {k: server.metric(f"continuum_{k}_total") for k in ("programs_inferred", "turns_attached")}
    convs = [[{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"user {u} asks"}]
             for u in range(3)]
    seen: dict[int, list[dict]] = {u: [] for u in range(3)}
    for k in range(3):                                   # interleaved, as concurrent users are
        for u, msgs in enumerate(convs):
            r, answer = _chat_turn(client, msgs)
            seen[u].append(_program(r))
            msgs += [answer, {"role": "user", "content": f"and then {k}?"}]
    for u in range(3):
        assert len({p["program_id"] for p in seen[u]}) == 1
        assert [p["program_attached"] for p in seen[u]] == [False, True, True]
        assert all(p["program_inferred"] for p in seen[u])
    assert len({seen[u][0]["program_id"] for u in range(3)}) == 3
    assert server.metric("continuum_programs_inferred_total") == before["programs_inferred"] + 3
    assert server.metric("continuum_turns_attached_total") == before["turns_attached"] + 6


def test_explicit_ids_win_and_the_header_names_the_program(server):
    client = server.openai_client()
    msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "explicit"}]
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=msgs, max_tokens=4)
    first = raw.parse()
    pid = raw.headers["x-program-id"]
    assert raw.headers["x-program-inferred"] == "true" and _program(first)["program_id"] == pid
    msgs += [{"role": "assistant", "content": first.choices[0].message.content},
             {"role": "user", "content": "more"}]
    r = client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=4,
                                       extra_body={"continuum": {"program_id": "mine"}})
    assert {k: _program(r)[k] for k in ("program_id", "program_inferred")} == \
        {"program_id": "mine", "program_inferred": False}
    # the explicit request did not take the turn: an id-less continuation still can
    r, _ = _chat_turn(client, msgs)
    assert _program(r)["program_id"] == pid and _program(r)["program_attached"]


def test_streamed_turns_and_tool_calls_are_recognised(server):
    client = server.openai_client()
    tools = [{"type": "function", "function": {"name": "bash", "parameters": {"type": "object"}}}]
    msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "SCRIPT[hermes] go"}]
    chunks = list(client.chat.completions.create(
        model=MODEL, messages=msgs, tools=tools, max_tokens=200, stream=True,
        stream_options={"include_usage": True}))
    first = chunks[-1].usage.model_dump()["continuum"]
    assert first["tool_name"] == "bash"
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    msgs += [{"role": "assistant", "content": content,
              "tool_calls": [{"id": tc.id, "type": "function",
                              "function": {"name": tc.function.name,
                                           "arguments": tc.function.arguments}} for tc in calls]},
             {"role": "tool", "tool_call_id": calls[0].id, "content": "a.py\nb.py"}]
    r = client.chat.completions.create(model=MODEL, messages=msgs, tools=tools, max_tokens=200)
    assert _program(r)["program_id"] == first["program_id"] and _program(r)["program_attached"]


def test_completions_continue_by_text(server):
    client = server.openai_client()
    prompt = SYSTEM + "Q: list files\nA:"
    r1 = client.completions.create(model=MODEL, prompt=prompt, max_tokens=5)
    r2 = client.completions.create(model=MODEL, prompt=prompt + r1.choices[0].text + "\nQ: and?\nA:",
                                   max_tokens=5)
    other = client.completions.create(model=MODEL, prompt=prompt + " something else", max_tokens=5)
    assert _program(r2)["program_id"] == _program(r1)["program_id"] and _program(r2)["program_attached"]
    assert _program(other)["program_id"] != _program(r1)["program_id"]


def test_assign_leaves_explicit_ids_alone_and_off_means_one_turn_programs():
    agent = AgentInfo(program_id="given", tool_name="bash")
    same, turn = assign(None, agent, [1, 2], None, None)
    assert same is agent and turn.usage_fields()["program_inferred"] is False
    plain, turn = assign(None, AgentInfo(), [1, 2], object(), None)
    assert plain.program_id is None and turn.usage_fields() == {} and turn.headers() == {}


def test_the_flag_turns_recognition_off():
    s = Server(engine_kw={"program_inference": False}).start()
    try:
        r = s.openai_client().chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
        assert "continuum" not in r.parse().usage.model_dump()
        assert "x-program-id" not in r.headers
        text = httpx.get(s.url + "/metrics", timeout=HANG_GUARD_S).text
        assert "continuum_turns_attached_total" not in text
    finally:
        s.stop()


def test_completions_continue_by_the_returned_token_ids(server):
    """A client that sends token prompts and appends the returned ``token_ids`` (the bench's HTTP
    replay) is attached by those ids: their text alone would not do, since the random model's
    answers hold special tokens (left out of the text) and UTF-8 characters split across the
    prompt, the answer and the next input. Greedy seeded answers: before the fix, several of
    these 16 conversations started a second program."""
    import numpy as np

    rng = np.random.default_rng(0)
    for i in range(16):
        prompt = rng.integers(0, 256, 40).tolist()
        body = {"model": MODEL, "max_tokens": 13, "min_tokens": 13, "ignore_eos": True,
                "temperature": 0.0, "return_token_ids": True}
        r1 = httpx.post(server.url + "/v1/completions", json={**body, "prompt": prompt},
                        timeout=HANG_GUARD_S).json()
        nxt = prompt + r1["choices"][0]["token_ids"] + rng.integers(0, 256, 20).tolist()
        r2 = httpx.post(server.url + "/v1/completions", json={**body, "prompt": nxt},
                        timeout=HANG_GUARD_S).json()
        first, second = r1["usage"]["continuum"], r2["usage"]["continuum"]
        assert second["program_attached"] and second["program_id"] == first["program_id"], i
