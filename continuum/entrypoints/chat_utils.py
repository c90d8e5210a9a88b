"""Chat templates shared by the server and ``LLM.chat``: the ``--chat-template`` /
``chat_template=`` override, and a generic tool prompt for templates that ignore ``tools``.

Many small chat models (the default SmolLM2 among them) ship a template that never reads the
``tools`` variable: a request with tools would render the very same prompt as one without, and
the model could not know the tools exist. ``ChatRenderer`` detects such a template once (it
renders a probe conversation with one probe tool: if the tool's name is not in the text, the
template ignores tools) and then puts the tools in the prompt itself, as a Hermes-style system
section (``tool_prompt``): the tool schemas as JSON inside ``<tools></tools>`` and the request
to answer with ``<tool_call>{"name": ..., "arguments": ...}</tool_call>``, the form the server
parses back into OpenAI ``tool_calls`` (``continuum.kv_ttl.tool_parser``). Templates that do
render tools are used unchanged.

Invariants: with no tools, or with a template that renders them, the prompt is exactly the
template's (a tokenizer's named ``tool_use`` template, if any, for requests with tools); the
tool section goes into the first system message (appended after its text) or, when there is
none, becomes a new first system message.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence

import jinja2

from continuum.errors import ConfigError, InvalidRequestError

TOOL_PROMPT_HEADER = (
    "# Tools\n\n"
    "You may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n")
TOOL_PROMPT_FOOTER = (
    "\n</tools>\n\n"
    "For each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n"
    "<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>")

_PROBE_TOOL_NAME = "continuum_probe_tool_4f1c9e"
_PROBE_TOOLS = [{"type": "function", "function": {
    "name": _PROBE_TOOL_NAME, "description": "probe",
    "parameters": {"type": "object", "properties": {}}}}]
_PROBE_CONVERSATION = [{"role": "user", "content": "hi"}]


def load_chat_template(value: str | None) -> str | None:
    """``--chat-template`` / ``chat_template=``: a path to a Jinja file, or the Jinja text
    itself (anything containing ``{{`` or ``{%``). None stays None (the tokenizer's own).
    Raises ``ConfigError`` for a path that does not exist, an unreadable file, or Jinja that
    does not compile, so a typo fails at start-up rather than on the first request."""
    if value is None:
        return None
    if "{{" in value or "{%" in value:
        text = value
    else:
        try:
            with open(value, encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            raise ConfigError(f"chat template {value!r}: no such file (pass a path to a Jinja "
                              f"file or the template text itself)") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"chat template {value!r}: cannot read it: {e}") from None
    try:
        jinja2.Environment().parse(text)
    except jinja2.TemplateSyntaxError as e:
        where = os.path.basename(value) if text is not value else "the inline template"
        raise ConfigError(f"chat template ({where}) is not valid Jinja: {e.message} "
                          f"(line {e.lineno})") from None
    return text


def tool_prompt(tools: Sequence[dict]) -> str:
    """The generic Hermes-style tool section: one JSON schema per line inside ``<tools>``."""
    body = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
    return TOOL_PROMPT_HEADER + body + TOOL_PROMPT_FOOTER


def with_tool_prompt(conversation: Sequence[dict], tools: Sequence[dict]) -> list[dict]:
    """A copy of ``conversation`` whose first system message carries ``tool_prompt(tools)``
    (appended after its text), or with a new system message first when it has none."""
    section = tool_prompt(tools)
    conv = [dict(m) for m in conversation]
    for m in conv:
        if m.get("role") == "system":
            text = m.get("content") or ""
            m["content"] = f"{text}\n\n{section}" if text else section
            return conv
    return [{"role": "system", "content": section}, *conv]


class ChatRenderer:
    """Renders conversations with one tokenizer and one template (the tokenizer's own, or an
    override); computes once whether that template renders tools and tool calls."""

    def __init__(self, tokenizer, chat_template: str | None = None):
        self.tokenizer = tokenizer
        default, tool_use = _tokenizer_templates(tokenizer)
        #: the template of requests without tools, and of requests with tools
        self.template: str | None = chat_template or default
        self.tool_template: str | None = chat_template or tool_use or default
        #: whether assistant ``tool_calls`` can be passed structured (else rendered as text;
        #: judged on the tool template, which conversations carrying calls normally use)
        self.knows_tool_calls = "tool_calls" in (self.tool_template or "")
        #: whether tools need the tool section because the template does not show them
        self.ignores_tools = bool(self.tool_template) and not self._renders_probe_tool()

    def _renders_probe_tool(self) -> bool:
        try:
            text = self._apply(self.tool_template, _PROBE_CONVERSATION, _PROBE_TOOLS, True)
        except (jinja2.TemplateError, TypeError, ValueError, KeyError):
            # The template rejects the probe (it wants a system message first...): do not
            # second-guess it; the real render will show the template's own error if any.
            return True
        return _PROBE_TOOL_NAME in text

    def _apply(self, template: str, conversation: list[dict], tools: list[dict] | None,
               add_generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(
            conversation, tools=tools, tokenize=False, add_generation_prompt=add_generation_prompt,
            chat_template=template)

    def render(self, conversation: Sequence[dict], tools: list[dict] | None = None,
               add_generation_prompt: bool = True) -> str:
        """The prompt text. Raises ``InvalidRequestError`` when there is no template;
        ``jinja2.TemplateError`` from the template itself (the caller words it)."""
        if not self.template or not self.tool_template:
            raise InvalidRequestError("this model's tokenizer has no chat template: pass a chat "
                                      "template (--chat-template / chat_template=) or use "
                                      "plain completions")
        conv = list(conversation)
        if not tools:
            return self._apply(self.template, conv, None, add_generation_prompt)
        if self.ignores_tools:
            return self._apply(self.tool_template, with_tool_prompt(conv, tools), None,
                               add_generation_prompt)
        return self._apply(self.tool_template, conv, tools, add_generation_prompt)


def _tokenizer_templates(tokenizer) -> tuple[str | None, str | None]:
    """(default, tool_use) templates: a tokenizer may name several, as Hugging Face's
    ``{"default": ..., "tool_use": ...}``, where requests with tools take ``tool_use``."""
    t = getattr(tokenizer, "chat_template", None)
    if isinstance(t, dict):
        return t.get("default") or None, t.get("tool_use") or None
    return t or None, None
