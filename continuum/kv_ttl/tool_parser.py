"""Which tool did a model output call? (METHOD 2.3), and OpenAI ``tool_calls`` from raw text.

Two users:
- the scheduler (``extract_tool_name``): the name of the tool a finished turn called, to key
  the duration predictor. Recognised, in this order:
  1. OpenAI-style JSON text: ``{"tool_calls": [{"function": {"name": ...}}]}`` (or a list of
     such calls, or one ``{"function": {"name": ...}}``);
  2. Hermes/Qwen: ``<tool_call>{"name": ..., "arguments": ...}</tool_call>``;
  3. Llama-3.1 JSON: the whole output is ``{"name": ..., "parameters"|"arguments": ...}``
     (optionally after ``<|python_tag|>``, several separated by ``;``);
  4. mini-swe-agent style: exactly one fenced ``bash``/``sh`` block; its first word is the tool
     (``ls``, ``git``, ``pytest``...; a path is reduced to its basename).
- the server (``parse_tool_calls``, ``StreamingToolParser``): forms 2 and 3 become OpenAI
  ``tool_calls``; a bash block is ordinary content.

Pure Python, no torch, no clock: safe to import from kv_ttl and the scheduler.
"""
from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field

TOOL_CALL_OPEN, TOOL_CALL_CLOSE = "<tool_call>", "</tool_call>"
PYTHON_TAG = "<|python_tag|>"
_HERMES_RE = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)
_FENCE_RE = re.compile(r"```[ \t]*(bash|sh|shell)?[ \t]*\n(.*?)```", re.DOTALL)
_ENV_ASSIGN_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


@dataclass
class ToolCall:
    """One parsed call; ``arguments`` is a JSON string (OpenAI's wire form)."""

    name: str
    arguments: str = "{}"
    id: str = field(default_factory=lambda: "call_" + secrets.token_hex(12))

    def to_openai(self) -> dict:
        return {"id": self.id, "type": "function",
                "function": {"name": self.name, "arguments": self.arguments}}


def _loads(s: str):
    try:
        return json.loads(s)
    except (ValueError, RecursionError):
        return None


def _call_from_obj(obj) -> ToolCall | None:
    """``{"name", "arguments"|"parameters"}`` or ``{"function": {...}}`` -> ToolCall."""
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("function"), dict):
        obj = obj["function"]
    name = obj.get("name")
    if not isinstance(name, str) or not name.strip():
        return None
    args = obj.get("arguments", obj.get("parameters", {}))
    if not isinstance(args, str):
        args = json.dumps(args if args is not None else {}, ensure_ascii=False)
    return ToolCall(name.strip(), args)


def _hermes_calls(text: str) -> list[ToolCall] | None:
    if TOOL_CALL_OPEN not in text:
        return None
    calls = [_call_from_obj(_loads(m.group(1))) for m in _HERMES_RE.finditer(text)]
    calls = [c for c in calls if c is not None]
    return calls or None


def _llama_json_calls(text: str) -> list[ToolCall] | None:
    s = text.strip()
    if s.startswith(PYTHON_TAG):
        s = s[len(PYTHON_TAG):].strip()
    if not s.startswith("{"):
        return None
    obj = _loads(s)
    parts = [obj] if obj is not None else [_loads(p) for p in s.split(";") if p.strip()]
    calls = []
    for p in parts:
        c = _call_from_obj(p) if isinstance(p, dict) and ("parameters" in p or "arguments" in p) else None
        if c is None:
            return None       # not every part is a call: this is ordinary JSON content
        calls.append(c)
    return calls or None


def _openai_json_names(text: str) -> list[str] | None:
    s = text.strip()
    if not s.startswith(("{", "[")):
        return None
    obj = _loads(s)
    if isinstance(obj, dict) and isinstance(obj.get("tool_calls"), list):
        obj = obj["tool_calls"]
    elif isinstance(obj, dict) and isinstance(obj.get("function"), dict):
        obj = [obj]
    if not isinstance(obj, list):
        return None
    names = [c.name for c in map(_call_from_obj, obj) if c is not None]
    return names or None


def bash_block_tool(text: str) -> str | None:
    """First word of the command in the output's single fenced bash block, else None."""
    blocks = [m for m in _FENCE_RE.finditer(text) if m.group(1)]
    if len(blocks) != 1:
        return None
    for line in blocks[0].group(2).splitlines():
        words = line.strip().split()
        # skip leading `VAR=value` assignments: the tool is the command they prefix
        while words and _ENV_ASSIGN_RE.match(words[0]):
            words = words[1:]
        if words and not words[0].startswith("#"):
            word = words[0].rstrip(";&|")
            return word.rsplit("/", 1)[-1] or None
    return None


def parse_tool_calls(text: str) -> tuple[str | None, list[ToolCall]]:
    """Split a finished output into (content, tool calls) for an OpenAI response.

    Hermes: content is the text before the first ``<tool_call>`` (None if blank). Llama JSON:
    no content. Nothing recognised: (text, []).
    """
    calls = _hermes_calls(text)
    if calls:
        before = text.split(TOOL_CALL_OPEN, 1)[0].strip()
        return (before or None), calls
    calls = _llama_json_calls(text)
    if calls:
        return None, calls
    return text, []


def extract_tool_name(text: str) -> str | None:
    """The name of the (first) tool ``text`` calls, by METHOD 2.3's rules; None if none."""
    if not text:
        return None
    names = _openai_json_names(text)
    if names:
        return names[0]
    _, calls = parse_tool_calls(text)
    if calls:
        return calls[0].name
    return bash_block_tool(text)


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``marker``."""
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-n:]):
            return n
    return 0


class StreamingToolParser:
    """Incremental form of ``parse_tool_calls`` for SSE.

    ``feed(delta)`` returns (content_delta, completed calls). Content is never retracted:
    text that might still become a tool call (a partial ``<tool_call>`` marker, an open call,
    or an output that starts with ``{`` / ``<|python_tag|>``) is held back until it is decided.
    Each Hermes call is emitted whole as soon as its ``</tool_call>`` arrives; Llama JSON is
    decided at ``finish()``. Concatenating every content delta gives ``parse_tool_calls``'
    content (modulo surrounding whitespace); the calls are the same.
    """

    def __init__(self) -> None:
        self._buf = ""             # text not yet emitted as content nor consumed by a call
        self._mode = "undecided"   # undecided | text | hermes | json
        self._seen_content = False
        self.calls: list[ToolCall] = []

    def feed(self, delta: str) -> tuple[str, list[ToolCall]]:
        self._buf += delta
        if self._mode == "undecided":
            s = self._buf.lstrip()
            if not s:
                return "", []
            if len(s) < len(PYTHON_TAG) and PYTHON_TAG.startswith(s):
                return "", []      # could still become <|python_tag|> (or <tool_call>)
            if s.startswith("{") or s.startswith(PYTHON_TAG):
                self._mode = "json"
            else:
                self._mode = "text"
        if self._mode == "json":
            return "", []
        out, new = [], []
        while True:
            if self._mode == "text":
                i = self._buf.find(TOOL_CALL_OPEN)
                if i < 0:
                    keep = _partial_suffix(self._buf, TOOL_CALL_OPEN)
                    if not (self.calls or new):   # after the first call, text is dropped
                        out.append(self._buf[:len(self._buf) - keep])
                    self._buf = self._buf[len(self._buf) - keep:]
                    break
                if not (self.calls or new):
                    out.append(self._buf[:i])
                self._buf = self._buf[i + len(TOOL_CALL_OPEN):]
                self._mode = "hermes"
            j = self._buf.find(TOOL_CALL_CLOSE)
            if j < 0:
                break
            call = _call_from_obj(_loads(self._buf[:j].strip()))
            if call is not None:
                new.append(call)
            self._buf = self._buf[j + len(TOOL_CALL_CLOSE):]
            self._mode = "text"
        content = "".join(out)
        if not self._seen_content:
            content = content.lstrip()
        self._seen_content = self._seen_content or bool(content)
        self.calls.extend(new)
        return content, new

    def finish(self) -> tuple[str, list[ToolCall]]:
        """Flush at end of output: an unterminated Hermes call or the JSON body is parsed."""
        buf, self._buf = self._buf, ""
        if self._mode == "json":
            calls = _llama_json_calls(buf)
            if calls:
                self.calls.extend(calls)
                return "", calls
            return buf, []
        if self._mode == "hermes":
            call = _call_from_obj(_loads(buf.strip()))
            if call is not None:
                self.calls.append(call)
                return "", [call]
            return ("" if self.calls else TOOL_CALL_OPEN + buf), []
        return ("" if self.calls else buf), []
