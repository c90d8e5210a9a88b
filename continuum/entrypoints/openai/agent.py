"""The agent API: which program a request belongs to (DESIGN.md, "The agent API").

Sources, most specific first (the first one that sets a field wins):
1. the extension object ``"continuum": {"program_id", "is_last_step", "tool_name", "turn"}``;
2. the same names as top-level fields (what ``extra_body={...}`` of the openai client sends);
3. the authors' preview aliases: ``job_id`` -> program_id, ``this_func_call`` -> tool_name;
   ``last_func_call`` (the previous turn's tool) is accepted and ignored, because the server
   measures tool durations itself;
4. the ``X-Program-Id`` header.
Without a program id the request is a program of one turn (``AgentInfo()``). Unknown keys
inside the ``continuum`` object are a 400 naming them.
"""
from __future__ import annotations

from typing import Any

from continuum.entrypoints.openai.errors import bad_request
from continuum.errors import check_text
from continuum.request import AgentInfo

MAX_ID_LEN = 256
_ALIASES = {"program_id": ("program_id", "job_id"), "tool_name": ("tool_name", "this_func_call"),
            "is_last_step": ("is_last_step",), "turn": ("turn",)}


def _as_id(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise bad_request(f"{name} must be a string or an integer", name)
    s = str(value)
    if not s or len(s) > MAX_ID_LEN:
        raise bad_request(f"{name} must be 1 to {MAX_ID_LEN} characters", name)
    return check_text(s, name)


def _as_bool(value: Any, name: str) -> bool | None:
    if value is None:
        return None
    if not isinstance(value, bool):
        raise bad_request(f"{name} must be a boolean", name)
    return value


def _as_turn(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise bad_request(f"{name} must be a non-negative integer", name)
    return value


_CHECK = {"program_id": _as_id, "tool_name": _as_id, "is_last_step": _as_bool, "turn": _as_turn}


def agent_info(extra: dict[str, Any] | None, header_program_id: str | None) -> AgentInfo:
    """Build the request's AgentInfo from the body's extra fields and the header."""
    extra = extra or {}
    ext = extra.get("continuum")
    if ext is not None and not isinstance(ext, dict):
        raise bad_request("'continuum' must be an object", "continuum")
    # The extension object is ours: a typo there would silently drop the program, so unknown
    # keys are refused (the top-level body stays lenient, as OpenAI clients send extras).
    unknown = sorted(set(ext or {}) - set(_ALIASES))
    if unknown:
        raise bad_request(f"unknown field(s) {unknown} in 'continuum'; known: {sorted(_ALIASES)}",
                          "continuum")
    found: dict[str, Any] = {}
    for field, names in _ALIASES.items():
        candidates = [((ext or {}).get(field), f"continuum.{field}")]
        candidates += [(extra.get(n), n) for n in names]
        for value, where in candidates:
            checked = _CHECK[field](value, where)
            if checked is not None:
                found[field] = checked
                break
    if "program_id" not in found and header_program_id:
        found["program_id"] = _as_id(header_program_id.strip(), "X-Program-Id")
    return AgentInfo(program_id=found.get("program_id"), turn=found.get("turn"),
                     is_last_step=bool(found.get("is_last_step", False)),
                     tool_name=found.get("tool_name"))
