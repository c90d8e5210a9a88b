"""Chat templates: loading ``--chat-template`` / ``chat_template=``, detecting templates that
ignore tools, the generic tool section; and ``LLM(chat_template=...)`` with the real byte
tokenizer and a random model."""
import json

import pytest

from continuum.entrypoints.chat_utils import (TOOL_PROMPT_FOOTER, ChatRenderer, load_chat_template,
                                              tool_prompt, with_tool_prompt)
from continuum.errors import ConfigError, InvalidRequestError
from continuum.kv_ttl.tool_parser import parse_tool_calls
from continuum.llm import LLM
from continuum.models.byte_tokenizer import make_byte_tokenizer

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "weather",
                                           "parameters": {"type": "object", "properties": {}}}}]
CONV = [{"role": "user", "content": "hi"}]
# Qwen-style: lists the tools itself
RENDERS_TOOLS = ("{% if tools %}{% for t in tools %}<tool>{{ t | tojson }}</tool>{% endfor %}{% endif %}"
                 "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}")


def test_load_chat_template_file_inline_and_errors(tmp_path):
    f = tmp_path / "t.jinja"
    f.write_text("{{ messages[0].content }}")
    assert load_chat_template(str(f)) == "{{ messages[0].content }}"
    assert load_chat_template("{% for m in messages %}x{% endfor %}") == "{% for m in messages %}x{% endfor %}"
    assert load_chat_template(None) is None
    with pytest.raises(ConfigError, match="no such file"):
        load_chat_template(str(tmp_path / "nope.jinja"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_chat_template(str(tmp_path))                 # a directory
    bad = tmp_path / "bad.jinja"
    bad.write_text("{% if %}")
    with pytest.raises(ConfigError, match=r"bad\.jinja\) is not valid Jinja"):
        load_chat_template(str(bad))


def test_detection_and_the_tool_section():
    tok = make_byte_tokenizer()                           # ChatML that ignores tools
    chatml = ChatRenderer(tok)
    assert chatml.ignores_tools and not chatml.knows_tool_calls
    text = chatml.render(CONV, TOOLS)
    assert text == ("<|im_start|>system\n" + tool_prompt(TOOLS) + "<|im_end|>\n"
                    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    assert f"<tools>\n{json.dumps(TOOLS[0])}\n</tools>" in text
    assert chatml.render(CONV) == chatml.render(CONV, [])  # no tools: the template's prompt
    qwen = ChatRenderer(tok, RENDERS_TOOLS)
    assert not qwen.ignores_tools
    assert qwen.render(CONV, TOOLS) == f"<tool>{json.dumps(TOOLS[0])}</tool><user>hi"
    # a template that rejects the probe conversation is trusted as it is
    picky = ChatRenderer(tok, "{% if messages[0].role != 'system' %}{{ raise_exception('x') }}{% endif %}")
    assert not picky.ignores_tools


def test_named_templates_tool_use_for_requests_with_tools():
    tok = make_byte_tokenizer()
    tok.chat_template = {"default": "{% for m in messages %}D:{{ m.content }}{% endfor %}",
                         "tool_use": RENDERS_TOOLS}
    r = ChatRenderer(tok)
    assert not r.ignores_tools
    assert r.render(CONV) == "D:hi"
    assert r.render(CONV, TOOLS) == f"<tool>{json.dumps(TOOLS[0])}</tool><user>hi"
    assert ChatRenderer(tok, "{{ messages[0].content }}").render(CONV, TOOLS).startswith("# Tools")


def test_with_tool_prompt_keeps_the_conversation():
    conv = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    out = with_tool_prompt(conv, TOOLS)
    assert out[0]["content"].startswith("Be brief.\n\n# Tools\n") and out[1] == conv[1]
    assert conv[0]["content"] == "Be brief."               # the caller's list is not changed
    assert with_tool_prompt(conv[1:], TOOLS)[0] == {"role": "system", "content": tool_prompt(TOOLS)}


def test_the_format_asked_for_is_the_format_parsed():
    """The example call in the tool section, filled in, parses as a call."""
    example = TOOL_PROMPT_FOOTER.split("XML tags:\n", 1)[1]
    filled = example.replace("<function-name>", '"get_weather"').replace("<args-json-object>", "{}")
    _, calls = parse_tool_calls(filled)
    assert [(c.name, c.arguments) for c in calls] == [("get_weather", "{}")]


@pytest.fixture(scope="module")
def llm(tmp_path_factory):
    f = tmp_path_factory.mktemp("tpl") / "plain.jinja"
    f.write_text("{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}")
    return LLM("random:tiny", chat_template=str(f), dtype="float32", device="cpu",
               kv_cache_memory="8MiB", max_model_len=512)


def test_llm_chat_template_argument(llm):
    tok = llm.get_tokenizer()
    assert tok.decode(llm.apply_chat_template(CONV)) == "user: hi\n"
    # the template ignores tools: they come in as a system section
    assert tok.decode(llm.apply_chat_template(CONV, tools=TOOLS)) == f"system: {tool_prompt(TOOLS)}\nuser: hi\n"
    # per call, as vLLM's chat(chat_template=...)
    assert tok.decode(llm.apply_chat_template(CONV, chat_template="[{{ messages[0].content }}]")) == "[hi]"
    out = llm.chat(CONV, use_tqdm=False)
    assert out[0].prompt_token_ids == tok.encode("user: hi\n", add_special_tokens=False)
    with pytest.raises(InvalidRequestError, match="chat template rejected"):
        llm.apply_chat_template(CONV, chat_template="{{ raise_exception('no') }}")
    with pytest.raises(ConfigError, match="no such file"):
        LLM("random:tiny", chat_template="/no/such/template.jinja")
