"""Tools reach the model whatever its chat template, ``--chat-template`` replaces the
template, and each program turn's pin decision shows in the response and on /metrics.

The test model's tokenizer (the byte tokenizer) has a ChatML template that ignores ``tools``,
like the default SmolLM2's. The scripted runner (conftest) makes the model answer with a
Hermes call exactly when the prompt contains ``SCRIPT[hermes]``: putting that key only in a
tool's description makes "the model calls the tool" depend on the tool schema reaching the
prompt, end to end through the real server and the official client.
"""
import json

import pytest

from continuum.cli import main
from continuum.entrypoints.chat_utils import TOOL_PROMPT_HEADER, load_chat_template
from tests.entrypoints.conftest import MODEL, Server

TOOLS = [{"type": "function", "function": {
    "name": "bash", "description": "run a shell command SCRIPT[hermes]",
    "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}}}}]
USER = [{"role": "user", "content": "list the files"}]

# A template that renders tools itself (so nothing is added) and marks every prompt.
CUSTOM = ("{% if tools %}TOOLS:{% for t in tools %}{{ t.function.name }};{% endfor %}|{% endif %}"
          "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}"
          "{% if add_generation_prompt %}[assistant] {% endif %}")


@pytest.fixture(scope="module")
def custom_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("tpl") / "custom.jinja"
    path.write_text(CUSTOM)
    return path


def _spy_prompts(server: Server) -> list[str]:
    """Record the decoded prompt of every request the engine accepts."""
    eng, real, seen = server.llm_engine, server.llm_engine.add_request, []

    def spy(prompt, *a, **kw):
        ids = prompt["prompt_token_ids"] if isinstance(prompt, dict) else prompt
        seen.append(eng.tokenizer.decode(ids))
        return real(prompt, *a, **kw)

    eng.add_request = spy
    return seen


@pytest.fixture(scope="module")
def default_server():
    s = Server().start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def decision_server():
    """A server whose every program call comes back: a call left in flight counts as a long
    one while few have returned (``scheduler/admission.py``), which would change the
    decisions these tests read."""
    s = Server().start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def custom_server(custom_file):
    s = Server(chat_template=load_chat_template(str(custom_file))).start()
    yield s
    s.stop()



def test_template_that_ignores_tools_gets_them_and_the_call_comes_back(default_server):
    prompts = _spy_prompts(default_server)
    client = default_server.openai_client()
    r = client.chat.completions.create(model=MODEL, messages=USER, tools=TOOLS, max_tokens=200)
    prompt = prompts[-1]
    assert TOOL_PROMPT_HEADER in prompt
    assert json.dumps(TOOLS[0]) in prompt            # the whole schema, as JSON
    assert prompt.startswith("<|im_start|>system\n# Tools")
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert call.function.name == "bash" and json.loads(call.function.arguments) == {"cmd": "ls -la"}
    # without tools the prompt is exactly the template's: no tool section, no call
    r = client.chat.completions.create(model=MODEL, messages=USER, max_tokens=4)
    assert prompts[-1] == "<|im_start|>user\nlist the files<|im_end|>\n<|im_start|>assistant\n"
    assert r.choices[0].message.tool_calls is None


def test_tool_section_joins_an_existing_system_message(default_server):
    prompts = _spy_prompts(default_server)
    msgs = [{"role": "system", "content": "You fix bugs."}, *USER]
    r = default_server.openai_client().chat.completions.create(model=MODEL, messages=msgs, tools=TOOLS,
                                                         max_tokens=200, stream=True)
    names = [tc.function.name for ch in r for tc in (ch.choices[0].delta.tool_calls or [])]
    assert names == ["bash"]
    assert prompts[-1].startswith("<|im_start|>system\nYou fix bugs.\n\n# Tools\n")
    assert prompts[-1].count("<|im_start|>system") == 1


def test_chat_template_file_is_used_and_one_that_renders_tools_is_left_alone(custom_server):
    prompts = _spy_prompts(custom_server)
    client = custom_server.openai_client()
    client.chat.completions.create(model=MODEL, messages=USER, max_tokens=2)
    assert prompts[-1] == "[user] list the files\n[assistant] "
    client.chat.completions.create(model=MODEL, messages=USER, tools=TOOLS, max_tokens=2)
    assert prompts[-1] == "TOOLS:bash;|[user] list the files\n[assistant] "   # no tool section


def test_pin_decision_in_usage_and_on_metrics(decision_server):
    client = decision_server.openai_client()
    name = "continuum_engine_pin_decisions_{}_total"
    before = {r: decision_server.metric(name.format(r)) for r in ("cold_start", "no_tool_call", "last_step")}
    # a cold engine: no tool durations seen yet, and this tiny model's reload costs next to
    # nothing, so the cold-start TTL is 0 and nothing is pinned: the response says why
    r = client.chat.completions.create(model=MODEL, messages=USER, tools=TOOLS, max_tokens=200,
                                       extra_body={"continuum": {"program_id": "t1"}})
    assert r.usage.model_dump()["continuum"] == {"tool_name": "bash", "pin_decision": "cold_start",
                                                 "pin_ttl_seconds": 0.0, "program_id": "t1",
                                                 "program_inferred": False, "program_attached": False}
    r = client.chat.completions.create(model=MODEL, messages=USER, max_tokens=2,
                                       extra_body={"continuum": {"program_id": "t1", "is_last_step": True}})
    assert r.usage.model_dump()["continuum"]["pin_decision"] == "last_step"
    # a plain request is a recognised program (a new one) that called no tool
    r = client.chat.completions.create(model=MODEL, messages=USER, max_tokens=2)
    plain = r.usage.model_dump()["continuum"]
    assert plain["pin_decision"] == "no_tool_call" and plain["program_inferred"] is True
    chunks = list(client.chat.completions.create(
        model=MODEL, messages=USER, tools=TOOLS, max_tokens=200, stream=True,
        stream_options={"include_usage": True}, extra_body={"continuum": {"program_id": "t2"}}))
    assert chunks[-1].usage.model_dump()["continuum"]["pin_decision"] == "cold_start"
    client.chat.completions.create(model=MODEL, messages=USER, max_tokens=2,
                                   extra_body={"continuum": {"program_id": "t2", "is_last_step": True}})
    after = {r: decision_server.metric(name.format(r)) for r in before}
    assert after == {"cold_start": before["cold_start"] + 2, "no_tool_call": before["no_tool_call"] + 1,
                     "last_step": before["last_step"] + 2}


def test_completions_usage_carries_the_decision(decision_server):
    r = decision_server.openai_client().completions.create(
        model=MODEL, prompt="SCRIPT[hermes]", max_tokens=200,
        extra_body={"continuum": {"program_id": "c1"}})
    assert r.usage.model_dump()["continuum"] == {"tool_name": "bash", "pin_decision": "cold_start",
                                                 "pin_ttl_seconds": 0.0, "program_id": "c1",
                                                 "program_inferred": False, "program_attached": False}


def test_serve_bad_chat_template_is_a_one_line_error(tmp_path, capsys):
    assert main(["serve", "random:tiny", "--port", "0",
                 "--chat-template", str(tmp_path / "missing.jinja")]) == 2
    assert "missing.jinja': no such file" in capsys.readouterr().err
    assert main(["serve", "random:tiny", "--port", "0", "--chat-template", "{% for %}"]) == 2
    assert "not valid Jinja" in capsys.readouterr().err
