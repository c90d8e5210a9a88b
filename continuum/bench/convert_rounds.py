"""Converters from per-round agent traces (TraceLab's formats) into the program-trace format.

Two inputs, both one row per LLM round, grouped into sessions (one program each):

- ``convert_round_csv``: the session-replay CSV of TraceLab's ``replay/`` runner. Header
  ``session_id`` (or its alias ``id``), ``round_idx``, ``prefix_len``, ``input_len``,
  ``output_len``, ``tool_wait_after_ms`` and optionally ``arrival_time``, in any order.
  ``arrival_time`` is the session's arrival in **milliseconds** from the start of the run
  (missing column or empty cell: 0); ``prefix_len`` the prior-context tokens the round keeps,
  ``input_len`` the tokens appended after them, so the round's prompt is
  ``prefix_len + input_len`` tokens; ``tool_wait_after_ms`` the sleep after the round.
- ``convert_round_jsonl``: the normalized round trace (``example_sessions/*/round_trace.jsonl``):
  ``session_id``, ``round_index``, ``input_tokens_total`` (= ``prefix_tokens`` +
  ``newly_append_tokens``), ``output_tokens`` and ``tools[]`` with ``tool_name`` and
  ``tool_wall_latency_ms``.

Both share one rule (``chain_turns``): a program-trace turn can only extend the previous
prompt + output, so each round's new tokens are chosen so that the replayed prompt has the
trace's prompt length: ``input_tokens = prompt_k - (prompt_{k-1} + output_{k-1})`` as replayed.
This is exact whatever the file means by ``prefix_len``: the full previous context (then
``input_tokens == input_len``), the previous prompt only (then ``input_len`` already counts the
previous output, which the trace format carries by itself), or a provider's cache hit (0 after a
cache miss). A round whose prompt is shorter than the replayed context (compaction, truncation,
reasoning dropped from the history) cannot be expressed: it appends 1 token, and the replayed
prompt exceeds the trace's until the trace grows past it again (counted in ``meta``).
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from continuum.bench.trace import ProgramTrace, TraceError, Turn, iter_jsonl

TIME_UNITS = {"ms": 1e-3, "s": 1.0}


@dataclass
class Round:
    """One LLM round as the trace records it: ``prompt`` is its whole prompt length."""
    prompt: int
    output: int
    tool: str | None
    tool_duration: float


def chain_turns(rounds: list[Round]) -> tuple[list[Turn], dict[str, int]]:
    """Turns whose replayed prompts match ``rounds[k].prompt`` wherever the context grows.

    Invariant: replayed prompt_k = max(rounds[k].prompt, replayed context before k + 1), so it
    equals the trace's prompt unless that is shorter than the context already replayed. Outputs
    below 1 token become 1 (the format forces at least one). ``meta`` counts the rounds that
    could not shrink (``rounds_context_shrunk``) and the largest excess of a replayed prompt
    over the trace's (``max_prompt_excess``, tokens); it is empty for a faithful session.
    """
    turns: list[Turn] = []
    ctx = shrunk = excess = 0
    for k, r in enumerate(rounds):
        new = r.prompt - ctx
        if new < 1:
            if k:
                shrunk += 1
                excess = max(excess, ctx + 1 - r.prompt)
            new = 1
        out = max(1, r.output)
        turns.append(Turn(new, out, r.tool, r.tool_duration))
        ctx += new + out
    # the final turn ends the program: no tool call follows it
    turns[-1].last, turns[-1].tool, turns[-1].tool_duration = True, None, 0.0
    return turns, ({"rounds_context_shrunk": shrunk, "max_prompt_excess": excess} if shrunk else {})


# ---- TraceLab replay CSV ---------------------------------------------------------------------

CSV_REQUIRED = ["round_idx", "prefix_len", "input_len", "output_len", "tool_wait_after_ms"]
CSV_COLUMNS = ["session_id", "id", "arrival_time", *CSV_REQUIRED]


def _csv_header(header: list[str] | None, path: Path) -> dict[str, int]:
    """Column name -> index; the session column is returned as 'session_id'."""
    if not header:
        raise TraceError(f"{path}:1: empty file (need a header row)")
    names = [h.strip() for h in header]
    cols = {n: i for i, n in enumerate(names)}
    where = f"{path}:1"
    unknown = [n for n in names if n not in CSV_COLUMNS]
    if unknown:
        raise TraceError(f"{where}: unknown column(s) {unknown}; known: {', '.join(CSV_COLUMNS)}")
    if len(cols) != len(names):
        raise TraceError(f"{where}: a column appears twice in {names}")
    if "session_id" in cols and "id" in cols:
        raise TraceError(f"{where}: both session_id and id (its alias) are present; keep one")
    if "id" in cols:
        cols["session_id"] = cols.pop("id")
    missing = [n for n in ["session_id", *CSV_REQUIRED] if n not in cols]
    if missing:
        raise TraceError(f"{where}: missing column(s) {missing} (session_id may be named id)")
    return cols


def _num(cell: str, kind: type, col: str, where: str, default: float | None = None):
    s = cell.strip()
    if not s and default is not None:
        return default
    try:
        v = kind(s)
    except ValueError:
        raise TraceError(f"{where}: {col} must be {'an integer' if kind is int else 'a number'}, "
                         f"got {cell!r}") from None
    if not math.isfinite(v) or v < 0:
        raise TraceError(f"{where}: {col} must be a finite number >= 0, got {cell!r}")
    return v


def convert_round_csv(path: str | Path, time_unit: str = "ms") -> list[ProgramTrace]:
    """One program per session, rounds ordered by ``round_idx`` (turn k = round k).

    ``time_unit`` is the unit of ``arrival_time`` (the format's is ms; ``"s"`` for files that
    use seconds). A session arrives at its first round's ``arrival_time`` (not shifted: the
    runner also counts from the start of the run). ``tool_wait_after_ms`` becomes the tool
    duration; the tool name is ``"tool"`` (the CSV has none). Programs are ordered by arrival,
    then first appearance. ``meta['input_len_with_output']`` counts rounds whose ``prefix_len``
    is the previous round's prompt, i.e. whose ``input_len`` included the previous output.
    """
    if time_unit not in TIME_UNITS:
        raise TraceError(f"time unit must be one of {sorted(TIME_UNITS)}, got {time_unit!r}")
    path = Path(path)
    sessions: dict[str, list[tuple[int, float, int, int, int, float, int]]] = {}
    with path.open(newline="", encoding="utf-8-sig") as f:   # -sig: tolerate a spreadsheet BOM
        reader = csv.reader(f)
        cols = _csv_header(next(reader, None), path)
        for lineno, row in enumerate(reader, 2):
            if not row or all(not c.strip() for c in row):
                continue
            where = f"{path}:{lineno}"
            if len(row) != len(cols):
                raise TraceError(f"{where}: expected {len(cols)} columns, got {len(row)}")
            sid = row[cols["session_id"]].strip()
            if not sid:
                raise TraceError(f"{where}: empty session id")
            get = lambda c, kind, default=None: _num(row[cols[c]], kind, c, where, default)  # noqa: E731
            arr = get("arrival_time", float, 0.0) if "arrival_time" in cols else 0.0
            rec = (get("round_idx", int), arr * TIME_UNITS[time_unit], get("prefix_len", int),
                   get("input_len", int), get("output_len", int), get("tool_wait_after_ms", float, 0.0),
                   lineno)
            if rec[4] < 1:
                raise TraceError(f"{where}: output_len must be >= 1, got {rec[4]}")
            sessions.setdefault(sid, []).append(rec)
    if not sessions:
        raise TraceError(f"{path}: no rounds")
    programs = []
    for sid, rows in sessions.items():
        rows.sort(key=lambda r: (r[0], r[6]))   # round_idx, then line: "first on line" is the first
        for a, b in zip(rows, rows[1:]):
            if a[0] == b[0]:
                raise TraceError(f"{path}:{b[6]}: session {sid!r} repeats round_idx {b[0]} "
                                 f"(first on line {a[6]})")
        rounds = [Round(pre + inp, out, "tool", wait / 1e3) for _, _, pre, inp, out, wait, _ in rows]
        turns, meta = chain_turns(rounds)
        with_output = sum(1 for a, b in zip(rows, rows[1:]) if b[2] == a[2] + a[3])
        if with_output:
            meta["input_len_with_output"] = with_output
        programs.append(ProgramTrace(sid, turns, rows[0][1], f"csv:{path.name}", meta))
    programs.sort(key=lambda p: p.arrival_time)   # stable: ties keep first-appearance order
    return programs


# ---- TraceLab normalized round trace (JSONL) -------------------------------------------------

def _int_field(row: dict, key: str, where: str, required: bool = True) -> int | None:
    v = row.get(key)
    if v is None and not required:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise TraceError(f"{where}: {key} must be an integer >= 0, got {v!r}")
    return v


def _prompt_len(row: dict, where: str) -> int:
    total = _int_field(row, "input_tokens_total", where, required=False)
    pre = _int_field(row, "prefix_tokens", where, required=False)
    new = _int_field(row, "newly_append_tokens", where, required=False)
    if pre is not None and new is not None:
        if total is not None and total != pre + new:
            raise TraceError(f"{where}: input_tokens_total {total} != prefix_tokens {pre} + "
                             f"newly_append_tokens {new}")
        return pre + new
    if total is None:
        raise TraceError(f"{where}: need input_tokens_total or prefix_tokens + newly_append_tokens")
    return total


def _tools(row: dict, where: str, counts: dict[str, int]) -> tuple[str | None, float]:
    """First tool's name (by ``tool_index``) and the summed wall latency in seconds.

    Like TraceLab's own CSV export: parallel calls are summed, null latencies are skipped
    (``tool_latency_missing``) and negative ones too (``tool_latency_invalid``).
    """
    tools = row.get("tools") or []
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise TraceError(f"{where}: tools must be a list of objects")
    tools = sorted(tools, key=lambda t: t.get("tool_index") if isinstance(t.get("tool_index"), int) else 0)
    ms = 0.0
    for t in tools:
        lat = t.get("tool_wall_latency_ms")
        if lat is None:
            counts["tool_latency_missing"] = counts.get("tool_latency_missing", 0) + 1
        elif isinstance(lat, bool) or not isinstance(lat, (int, float)) or not math.isfinite(lat):
            raise TraceError(f"{where}: tool_wall_latency_ms must be a number or null, got {lat!r}")
        elif lat < 0:
            counts["tool_latency_invalid"] = counts.get("tool_latency_invalid", 0) + 1
        else:
            ms += lat
    if not tools:
        return None, 0.0
    name = tools[0].get("tool_name")
    if not isinstance(name, str) or not name:
        raise TraceError(f"{where}: tools[].tool_name must be a non-empty string, got {name!r}")
    return name, ms / 1e3


def convert_round_jsonl(path: str | Path) -> list[ProgramTrace]:
    """One program per ``session_id`` (first-appearance order), turns in ``round_index`` order.

    Each round's prompt is ``input_tokens_total`` and its output ``output_tokens`` (reasoning
    included, as providers count it); tool name and duration come from ``tools[]`` (see
    ``_tools``). A round without tools waits 0 s before the next one (user think time is not in
    the trace), as does the final round. ``arrival_time`` is null (the bench draws arrivals):
    sessions were recorded hours or days apart; ``meta['start']`` keeps the first event's time.
    """
    path = Path(path)
    # per session: (round_index, line, round, the row, its tool-latency counts)
    sessions: dict[str, list[tuple[int, int, Round, dict, dict[str, int]]]] = {}
    with path.open(encoding="utf-8") as f:
        for lineno, where, row in iter_jsonl(f, str(path)):
            if not isinstance(row, dict):
                raise TraceError(f"{where}: a line must be a JSON object")
            sid = row.get("session_id")
            if not isinstance(sid, str) or not sid:
                raise TraceError(f"{where}: session_id must be a non-empty string, got {sid!r}")
            idx = _int_field(row, "round_index", where)
            out = _int_field(row, "output_tokens", where)
            counts: dict[str, int] = {}
            tool, dur = _tools(row, where, counts)
            sessions.setdefault(sid, []).append(
                (idx, lineno, Round(_prompt_len(row, where), out, tool, dur), row, counts))
    if not sessions:
        raise TraceError(f"{path}: no rounds")
    programs = []
    for sid, rows in sessions.items():
        rows.sort(key=lambda r: (r[0], r[1]))
        for a, b in zip(rows, rows[1:]):
            if a[0] == b[0]:
                raise TraceError(f"{path}:{b[1]}: session {sid!r} repeats round_index {b[0]} "
                                 f"(first on line {a[1]})")
        turns, acc = chain_turns([r[2] for r in rows])
        first = rows[0][3]
        meta: dict[str, Any] = {k: first[k] for k in ("provider", "model") if isinstance(first.get(k), str)}
        events = first.get("timing_events")
        if isinstance(events, list) and events and isinstance(events[0], dict) and events[0].get("timestamp"):
            meta["start"] = events[0]["timestamp"]
        for *_, counts in rows[:-1]:   # the final round's tools are not replayed
            for k, v in counts.items():
                acc[k] = acc.get(k, 0) + v
        programs.append(ProgramTrace(sid, turns, None, f"round-jsonl:{path.name}", {**meta, **acc}))
    return programs
