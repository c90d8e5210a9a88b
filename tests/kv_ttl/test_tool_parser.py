"""Tool-name extraction (METHOD 2.3) and OpenAI tool_calls parsing, batch and streaming."""
import json

import pytest

from continuum.kv_ttl.tool_parser import (StreamingToolParser, extract_tool_name,
                                          parse_tool_calls)

HERMES = 'I will list files.\n<tool_call>\n{"name": "bash", "arguments": {"cmd": "ls"}}\n</tool_call>'
LLAMA = '{"name": "get_weather", "parameters": {"city": "Paris"}}'


@pytest.mark.parametrize("text,name", [
    # OpenAI-style tool_calls (JSON text, list of calls, one call)
    ('{"tool_calls": [{"id": "c1", "type": "function", "function": {"name": "search", '
     '"arguments": "{}"}}]}', "search"),
    ('[{"type": "function", "function": {"name": "read_file", "arguments": {}}}]', "read_file"),
    ('{"function": {"name": "edit", "arguments": "{}"}}', "edit"),
    # Hermes / Qwen
    (HERMES, "bash"),
    ('<tool_call>{"name": "python", "arguments": {}}</tool_call><tool_call>{"name": "b", '
     '"arguments": {}}</tool_call>', "python"),
    ('<tool_call>\n{"name": "unterminated", "arguments": {}}', "unterminated"),
    # Llama 3.1 JSON
    (LLAMA, "get_weather"),
    ('<|python_tag|>{"name": "calc", "arguments": {"x": 1}}', "calc"),
    ('{"name": "a", "parameters": {}}; {"name": "b", "parameters": {}}', "a"),
    # mini-swe-agent bash block: first word is the tool
    ("THOUGHT: look around\n```bash\nls -la /repo\n```", "ls"),
    ("```bash\ncd /repo && git status\n```", "cd"),
    ("```sh\n# comment\nFOO=1 /usr/bin/python -m pytest -x\n```", "python"),
    ("```bash\npytest tests/\n```\nmore text", "pytest"),
])
def test_extract_tool_name(text, name):
    assert extract_tool_name(text) == name


@pytest.mark.parametrize("text", [
    "", "Just an answer, no tool.", '{"answer": 42}', '{"name": "x"}',        # no args: plain JSON
    "```python\nprint(1)\n```",                                              # not a bash block
    "```bash\nls\n```\n```bash\npwd\n```",                                   # two blocks: ambiguous
    "<tool_call>not json</tool_call>", '{"tool_calls": []}',
])
def test_no_tool(text):
    assert extract_tool_name(text) is None


def test_parse_tool_calls_shapes():
    content, calls = parse_tool_calls(HERMES)
    assert content == "I will list files."
    assert [c.name for c in calls] == ["bash"] and json.loads(calls[0].arguments) == {"cmd": "ls"}
    d = calls[0].to_openai()
    assert d["type"] == "function" and d["id"].startswith("call_") and d["function"]["name"] == "bash"
    content, calls = parse_tool_calls(LLAMA)
    assert content is None and calls[0].name == "get_weather"
    assert json.loads(calls[0].arguments) == {"city": "Paris"}
    # string arguments are kept verbatim
    _, calls = parse_tool_calls('<tool_call>{"name": "f", "arguments": "{\\"a\\": 1}"}</tool_call>')
    assert calls[0].arguments == '{"a": 1}'
    # bash blocks are content, not tool calls
    assert parse_tool_calls("```bash\nls\n```") == ("```bash\nls\n```", [])
    assert parse_tool_calls("hello") == ("hello", [])


def _stream(text: str, step: int):
    p = StreamingToolParser()
    content, calls = "", []
    for i in range(0, len(text), step):
        c, new = p.feed(text[i:i + step])
        content += c
        calls += new
    c, new = p.finish()
    return content + c, calls + new


@pytest.mark.parametrize("step", [1, 2, 3, 7, 1000])
@pytest.mark.parametrize("text", [
    HERMES, LLAMA, "plain answer with < and { inside", "<tool_cal", "{not json at all",
    '<tool_call>{"name": "a", "arguments": {}}</tool_call>\n<tool_call>{"name": "b", "arguments": '
    '{"x": 1}}</tool_call>', "<|python_tag|>" + LLAMA, "  leading spaces then text",
    '<tool_call>{"name": "open", "arguments": {}}',
])
def test_streaming_matches_batch(text, step):
    content, calls = _stream(text, step)
    want_content, want_calls = parse_tool_calls(text)
    assert [(c.name, c.arguments) for c in calls] == [(c.name, c.arguments) for c in want_calls]
    assert (content.strip() or None) == (want_content.strip() if want_content else None)


def test_streaming_never_emits_a_partial_marker():
    p = StreamingToolParser()
    out = [p.feed(ch)[0] for ch in "ok <tool_call>"]
    assert "".join(out) == "ok "          # the marker itself never leaks as content
    assert "<" not in "".join(out)
