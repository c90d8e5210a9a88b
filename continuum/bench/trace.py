"""The program-trace format (JSONL) and its validation.

One JSON object per line, one line per agent program::

    {"program_id": "swe-0007", "arrival_time": null, "source": "gen:swe-bench-like",
     "turns": [{"input_tokens": 1800, "output_tokens": 210, "tool": "grep",
                "tool_duration": 0.41},
               ...,
               {"input_tokens": 950, "output_tokens": 120, "tool": null,
                "tool_duration": 0.0, "last": true}]}

Fields (per program): ``program_id`` (non-empty string, unique in the file), ``arrival_time``
(seconds from the start of the run, or null: the bench draws Poisson arrivals), ``source``
(free text, optional), ``turns`` (non-empty list).
Per turn: ``input_tokens`` (int >= 1, *new* prompt tokens of this turn: turn 1's is the whole
first prompt, a later turn's is what the tool result and the next user/tool message add on top
of the previous prompt + output), ``output_tokens`` (int >= 1, forced with ignore_eos +
max_tokens), ``tool`` (name of the tool called after this turn, or null), ``tool_duration``
(seconds >= 0 between this turn's finish and the next turn's send), ``last`` (bool; true on
the final turn only, default: true for the final turn), optional ``messages`` (the turn's new
chat messages, informational).

Invariant of every loaded trace: turn k+1's prompt = turn k's prompt + turn k's output + turn
k+1's ``input_tokens`` new tokens, so consecutive turns share a growing prefix.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator


class TraceError(ValueError):
    """A trace file is malformed; the message names the file and line."""


@dataclass
class Turn:
    input_tokens: int
    output_tokens: int
    tool: str | None = None
    tool_duration: float = 0.0
    last: bool = False
    messages: list[dict] | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                             "tool": self.tool, "tool_duration": round(self.tool_duration, 6)}
        if self.last:
            d["last"] = True
        if self.messages is not None:
            d["messages"] = self.messages
        return d


@dataclass
class ProgramTrace:
    program_id: str
    turns: list[Turn]
    arrival_time: float | None = None
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def total_tokens(self) -> int:
        """Prompt + output tokens over all turns (what an engine without caching processes)."""
        ctx = total = 0
        for t in self.turns:
            ctx += t.input_tokens
            total += ctx + t.output_tokens
            ctx += t.output_tokens
        return total

    @property
    def final_context(self) -> int:
        return sum(t.input_tokens + t.output_tokens for t in self.turns)

    def to_dict(self) -> dict[str, Any]:
        d = {"program_id": self.program_id, "arrival_time": self.arrival_time, "source": self.source,
             "turns": [t.to_dict() for t in self.turns]}
        if self.meta:
            d["meta"] = self.meta
        return d


def _check(cond: bool, where: str, msg: str) -> None:
    if not cond:
        raise TraceError(f"{where}: {msg}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and v != float("inf")


def parse_program(obj: Any, where: str) -> ProgramTrace:
    """Validate one decoded line; ``where`` ("file:line") prefixes every error."""
    _check(isinstance(obj, dict), where, "a line must be a JSON object")
    unknown = set(obj) - {"program_id", "arrival_time", "source", "turns", "meta"}
    _check(not unknown, where, f"unknown program field(s) {sorted(unknown)}")
    pid = obj.get("program_id")
    _check(isinstance(pid, str) and pid != "", where, "program_id must be a non-empty string")
    arr = obj.get("arrival_time")
    _check(arr is None or (_is_num(arr) and arr >= 0), where, "arrival_time must be null or a number >= 0")
    src = obj.get("source", "")
    _check(isinstance(src, str), where, "source must be a string")
    turns = obj.get("turns")
    _check(isinstance(turns, list) and turns, where, f"program {pid!r}: turns must be a non-empty list")
    out: list[Turn] = []
    for i, t in enumerate(turns):
        w = f"{where}: program {pid!r} turn {i}"
        _check(isinstance(t, dict), w, "a turn must be an object")
        unknown = set(t) - {"input_tokens", "output_tokens", "tool", "tool_duration", "last", "messages"}
        _check(not unknown, w, f"unknown turn field(s) {sorted(unknown)}")
        for k in ("input_tokens", "output_tokens"):
            _check(_is_int(t.get(k)) and t[k] >= 1, w, f"{k} must be an integer >= 1, got {t.get(k)!r}")
        tool = t.get("tool")
        _check(tool is None or isinstance(tool, str), w, "tool must be a string or null")
        dur = t.get("tool_duration", 0.0)
        _check(_is_num(dur) and dur >= 0, w, f"tool_duration must be a number >= 0, got {dur!r}")
        is_final = i == len(turns) - 1
        last = t.get("last", is_final)
        _check(isinstance(last, bool), w, "last must be true or false")
        _check(last == is_final, w, "last must be true on the final turn and only there")
        msgs = t.get("messages")
        _check(msgs is None or isinstance(msgs, list), w, "messages must be a list")
        out.append(Turn(t["input_tokens"], t["output_tokens"], tool, float(dur), last, msgs))
    return ProgramTrace(pid, out, None if arr is None else float(arr), src, obj.get("meta") or {})


def iter_jsonl(lines: Iterable[str], name: str) -> Iterator[tuple[int, str, Any]]:
    """(line number, "name:line", parsed value) per JSONL line; blank lines and lines starting
    with '#' are skipped; invalid JSON is a TraceError naming the line."""
    for lineno, line in enumerate(lines, 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        where = f"{name}:{lineno}"
        try:
            obj = json.loads(s)
        except json.JSONDecodeError as e:
            raise TraceError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
        yield lineno, where, obj


def parse_lines(lines: Iterable[str], name: str = "<trace>") -> list[ProgramTrace]:
    """Parse JSONL text; blank lines and lines starting with '#' are skipped."""
    progs: list[ProgramTrace] = []
    seen: dict[str, int] = {}
    for lineno, where, obj in iter_jsonl(lines, name):
        p = parse_program(obj, where)
        _check(p.program_id not in seen, where,
               f"duplicate program_id {p.program_id!r} (first on line {seen.get(p.program_id)})")
        seen[p.program_id] = lineno
        progs.append(p)
    if not progs:
        raise TraceError(f"{name}: no programs in the trace")
    return progs


def load_trace(path: str | Path) -> list[ProgramTrace]:
    path = Path(path)
    if not path.exists():
        raise TraceError(f"{path}: no such trace file")
    with path.open() as f:
        return parse_lines(f, str(path))


def save_trace(programs: Iterable[ProgramTrace], path: str | Path, header: str | None = None) -> None:
    """Write JSONL; ``header`` lines are written as '#' comments (e.g. the regenerate command)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        for h in (header or "").splitlines():
            f.write(f"# {h}\n")
        for p in programs:
            f.write(json.dumps(p.to_dict(), separators=(",", ":")) + "\n")


# A file that ``continuum serve --record-trace`` wrote starts with ``# continuum-record {json}``:
# the format version, the file's segment index and the server's settings (policy, knobs).
RECORD_HEADER_TAG = "continuum-record"


def read_record_header(path: str | Path) -> dict[str, Any] | None:
    """The JSON of a recorded file's first line (None: not a recording, or unreadable JSON)."""
    with Path(path).open() as f:
        first = f.readline().strip()
    prefix = f"# {RECORD_HEADER_TAG} "
    if not first.startswith(prefix):
        return None
    try:
        head = json.loads(first[len(prefix):])
    except json.JSONDecodeError:
        return None
    return head if isinstance(head, dict) else None


def trace_stats(programs: list[ProgramTrace]) -> dict[str, float]:
    """Mean/std of turns, tool durations (ms) and tokens per program, as METHOD.md table 2."""
    import numpy as np

    turns = np.array([len(p.turns) for p in programs], dtype=float)
    tools = np.array([t.tool_duration * 1e3 for p in programs for t in p.turns if not t.last] or [0.0])
    toks = np.array([p.total_tokens for p in programs], dtype=float)
    return {"programs": len(programs), "turns_mean": turns.mean(), "turns_std": turns.std(),
            "tool_ms_mean": tools.mean(), "tool_ms_std": tools.std(),
            "tokens_mean": toks.mean(), "tokens_std": toks.std(),
            "final_context_mean": float(np.mean([p.final_context for p in programs]))}
