"""Converters from public agent-trace formats into the program-trace format (trace.py).

- ``convert_swe_smith``: SWE-agent trajectories (``../shared/traces/swe-smith-5.json``), token
  counts from rendering the conversation with the serving model's chat template; tool names
  from ``tool_calls[].function.name``, durations from ``execution_time_seconds``.
- ``convert_round_csv``: the per-round replay CSV
  ``session_id,arrival_time,round_idx,prefix_len,input_len,output_len,tool_wait_after_ms``.
"""
from __future__ import annotations

import ast
import csv
import json
from pathlib import Path

from continuum.bench.trace import ProgramTrace, TraceError, Turn


def _text(content) -> str:
    """SWE-smith stores content as a string, a list of {type, text} parts, or a stringified list."""
    if isinstance(content, list):
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    if isinstance(content, str) and content.startswith("[{"):
        try:
            return _text(ast.literal_eval(content))
        except (ValueError, SyntaxError):
            return content
    return "" if content is None else str(content)


def _tool_calls(msg: dict) -> list[dict]:
    tc = msg.get("tool_calls")
    if isinstance(tc, str):
        try:
            tc = ast.literal_eval(tc)
        except (ValueError, SyntaxError):
            return []
    return tc if isinstance(tc, list) else []


def load_tokenizer(spec: str = "byte"):
    """'byte' (offline byte tokenizer, instant), 'default' (the embedded SmolLM2's GGUF
    tokenizer), or a local HF directory."""
    if spec == "byte":
        from continuum.models.byte_tokenizer import make_byte_tokenizer
        return make_byte_tokenizer()
    if spec == "default":
        from continuum.models.gguf_loader import gguf_tokenizer, open_gguf
        from continuum.models.loader import default_model_path
        p = default_model_path()
        return gguf_tokenizer(p, open_gguf(p))
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(spec, local_files_only=True)


def convert_swe_smith(path: str | Path, tokenizer=None) -> list[ProgramTrace]:
    """One program per trajectory; one turn per assistant message.

    Turn k's new input = tokens of the conversation rendered up to (and prompting for) the
    k-th assistant message, minus the previous turn's full context; its output = the rendered
    assistant message (content + action) minus its prompt. Invariant: the resulting trace
    reproduces each turn's prompt length exactly (up to template boundary effects, >= 1 token).
    """
    tok = tokenizer or load_tokenizer("byte")
    data = json.loads(Path(path).read_text())
    programs = []
    for i, traj in enumerate(data):
        msgs = traj["messages"]
        msgs = json.loads(msgs) if isinstance(msgs, str) else msgs
        conv: list[dict] = []
        turns: list[Turn] = []
        prev_ctx = 0

        def n_tokens(messages, gen: bool) -> int:
            text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen)
            return len(tok.encode(text, add_special_tokens=False))

        for m in msgs:
            role = m.get("role")
            if role == "assistant":
                prompt_len = n_tokens(conv, True)
                calls = _tool_calls(m)
                action = m.get("action") or ""
                body = _text(m.get("content")) + (f"\n```\n{action}\n```" if action else "")
                conv.append({"role": "assistant", "content": body})
                ctx = n_tokens(conv, False)
                name = calls[0]["function"]["name"] if calls and "function" in calls[0] else None
                dur = sum(float(c.get("execution_time_seconds") or 0.0) for c in calls)
                turns.append(Turn(max(1, prompt_len - prev_ctx), max(1, ctx - prompt_len), name, dur))
                prev_ctx = ctx
            else:
                # tool observations are sent back as user messages by chat templates without a
                # tool role; the token count is what matters here.
                conv.append({"role": "user" if role == "tool" else role, "content": _text(m.get("content"))})
        if not turns:
            continue
        turns[-1].last, turns[-1].tool, turns[-1].tool_duration = True, None, 0.0
        pid = traj.get("traj_id") or traj.get("instance_id") or f"swe-smith-{i}"
        programs.append(ProgramTrace(str(pid), turns, None, f"swe-smith:{Path(path).name}",
                                     {"instance_id": traj.get("instance_id"), "model": traj.get("model")}))
    return programs


CSV_COLUMNS = ["session_id", "arrival_time", "round_idx", "prefix_len", "input_len", "output_len",
               "tool_wait_after_ms"]


def convert_round_csv(path: str | Path) -> list[ProgramTrace]:
    """One program per session, rounds ordered by ``round_idx``.

    ``input_len`` is read as the round's new tokens and ``output_len`` its output; ``prefix_len``
    (tokens reused from earlier rounds) is kept in ``meta['prefix_mismatch']`` when it differs
    from the running context (e.g. the client truncated history, which this format cannot
    express). The session's arrival is its first round's ``arrival_time`` (seconds), shifted so
    the earliest session arrives at 0. ``tool_wait_after_ms`` becomes the tool duration.
    """
    path = Path(path)
    sessions: dict[str, list[tuple[int, float, int, int, int, float, int]]] = {}
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip() for h in header] != CSV_COLUMNS:
            raise TraceError(f"{path}:1: header must be {','.join(CSV_COLUMNS)}, got {header}")
        for lineno, row in enumerate(reader, 2):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(CSV_COLUMNS):
                raise TraceError(f"{path}:{lineno}: expected {len(CSV_COLUMNS)} columns, got {len(row)}")
            try:
                sid = row[0].strip()
                arr, ridx = float(row[1]), int(row[2])
                pre, inp, out = int(row[3]), int(row[4]), int(row[5])
                wait = float(row[6]) if row[6].strip() else 0.0
            except ValueError as e:
                raise TraceError(f"{path}:{lineno}: {e}") from None
            if not sid or arr < 0 or pre < 0 or inp < 0 or out < 1 or wait < 0:
                raise TraceError(f"{path}:{lineno}: need a session id, arrival_time/prefix_len/"
                                 "input_len/tool_wait_after_ms >= 0 and output_len >= 1")
            sessions.setdefault(sid, []).append((ridx, arr, pre, inp, out, wait, lineno))
    if not sessions:
        raise TraceError(f"{path}: no rounds")
    t0 = min(r[1] for rows in sessions.values() for r in rows)
    programs = []
    for sid, rows in sessions.items():
        rows.sort()
        idx = [r[0] for r in rows]
        if len(set(idx)) != len(idx):
            raise TraceError(f"{path}:{rows[-1][6]}: session {sid!r} repeats a round_idx")
        turns, ctx, mismatch = [], 0, 0
        for ridx, _, pre, inp, out, wait, _ in rows:
            if turns and pre != ctx:
                mismatch += 1
            turns.append(Turn(max(1, inp), out, "tool", wait / 1e3))
            ctx += max(1, inp) + out
        turns[-1].last, turns[-1].tool, turns[-1].tool_duration = True, None, 0.0
        programs.append(ProgramTrace(sid, turns, rows[0][1] - t0, f"csv:{path.name}",
                                     {"prefix_mismatch": mismatch} if mismatch else {}))
    programs.sort(key=lambda p: (p.arrival_time, p.program_id))
    return programs
