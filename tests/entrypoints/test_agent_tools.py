"""Tools round trip and the agent API (program ids from body, extension, header, aliases)."""
import json

import pytest

from continuum.entrypoints.openai.agent import agent_info
from continuum.entrypoints.openai.errors import OpenAIError
from continuum.request import AgentInfo
from tests.entrypoints.conftest import MODEL

TOOLS = [{"type": "function", "function": {
    "name": "bash", "description": "run a shell command",
    "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}}}}]


@pytest.fixture()
def seen_agents(server):
    """Record the AgentInfo of every request the engine accepts."""
    eng, real, seen = server.llm_engine, server.llm_engine.add_request, []

    def spy(*a, **kw):
        seen.append(kw.get("agent"))
        return real(*a, **kw)

    eng.add_request = spy
    yield seen
    del eng.add_request


def test_three_turn_tool_loop_hits_prefix_cache(server, client, seen_agents):
    # short: the chat template ignores tools, so the prompt also carries the tool section
    # (about 600 byte tokens here) and the third turn must still fit max_model_len 1024
    messages = [{"role": "system", "content": "You are an agent."},
                {"role": "user", "content": "SCRIPT[hermes] list the repository files"}]
    cached = []
    ways = [dict(extra_body={"continuum": {"program_id": "task-17", "tool_name": "bash"}}),
            dict(extra_body={"program_id": "task-17", "is_last_step": False}),
            dict(extra_headers={"X-Program-Id": "task-17"}, extra_body={"is_last_step": True})]
    for turn, kw in enumerate(ways):
        r = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS,
                                           tool_choice="auto", **kw)
        choice = r.choices[0]
        assert choice.finish_reason == "tool_calls"
        call = choice.message.tool_calls[0]
        assert call.function.name == "bash" and json.loads(call.function.arguments) == {"cmd": "ls -la"}
        cached.append(r.usage.prompt_tokens_details.cached_tokens)
        messages += [{"role": "assistant", "content": choice.message.content,
                      "tool_calls": [call.model_dump()]},
                     {"role": "tool", "tool_call_id": call.id, "content": f"file{turn}.py\n" * 4}]
    assert cached[0] == 0 and 0 < cached[1] < cached[2], cached
    assert [a.program_id for a in seen_agents] == ["task-17"] * 3
    assert seen_agents[0].tool_name == "bash"
    assert [a.is_last_step for a in seen_agents] == [False, False, True]
    server.wait_idle()


@pytest.mark.parametrize("script,names", [("SCRIPT[llama]", ["get_weather"]),
                                          ("SCRIPT[two]", ["a", "b"]),
                                          ("SCRIPT[hermes]", ["bash"])])
def test_tool_calls_streaming_and_not(client, script, names):
    msgs = [{"role": "user", "content": script}]
    r = client.chat.completions.create(model=MODEL, messages=msgs, tools=TOOLS)
    assert [tc.function.name for tc in r.choices[0].message.tool_calls] == names
    assert r.choices[0].finish_reason == "tool_calls"
    calls, content, finish = {}, "", None
    for ch in client.chat.completions.create(model=MODEL, messages=msgs, tools=TOOLS, stream=True):
        d = ch.choices[0].delta
        content += d.content or ""
        for tc in d.tool_calls or []:
            calls.setdefault(tc.index, [tc.function.name, ""])[1] += tc.function.arguments or ""
        finish = ch.choices[0].finish_reason or finish
    assert [calls[i][0] for i in sorted(calls)] == names
    assert [calls[i][1] for i in sorted(calls)] == [t.function.arguments
                                                     for t in r.choices[0].message.tool_calls]
    assert content.strip() == (r.choices[0].message.content or "").strip()
    assert "<tool_call>" not in content and finish == "tool_calls"


def test_tool_choice_none_and_no_tools_leave_text_alone(client):
    msgs = [{"role": "user", "content": "SCRIPT[hermes]"}]
    for kw in (dict(tools=TOOLS, tool_choice="none"), {}):
        r = client.chat.completions.create(model=MODEL, messages=msgs, **kw)
        assert "<tool_call>" in r.choices[0].message.content
        assert r.choices[0].message.tool_calls is None and r.choices[0].finish_reason == "stop"


def test_agent_info_sources_and_precedence():
    assert agent_info({}, None) == AgentInfo()
    assert agent_info({"job_id": 42, "this_func_call": "git", "last_func_call": "ls"}, None) == \
        AgentInfo(program_id="42", tool_name="git")
    assert agent_info({"continuum": {"program_id": "p", "turn": 3, "is_last_step": True},
                       "program_id": "q", "job_id": "r"}, "h") == \
        AgentInfo(program_id="p", turn=3, is_last_step=True)
    assert agent_info({"program_id": "q", "job_id": "r"}, "h").program_id == "q"
    assert agent_info({}, "from-header").program_id == "from-header"
    for bad in ({"continuum": "x"}, {"program_id": ["x"]}, {"is_last_step": "yes"}, {"continuum": {"program": "x"}},
                {"continuum": {"turn": -1}}, {"job_id": "x" * 300}, {"tool_name": True}):
        with pytest.raises(OpenAIError) as e:
            agent_info(bad, None)
        assert e.value.status == 400


def test_unknown_key_in_the_continuum_object_is_a_400_naming_it(client):
    """A typo there would silently serve the request without its program."""
    import openai
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                       max_tokens=1, extra_body={"continuum": {"program": "task-1"}})
    err = e.value.body
    assert err["param"] == "continuum" and "['program']" in err["message"]
    assert "program_id" in err["message"]
