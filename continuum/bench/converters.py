"""Converters from public agent-trace formats into the program-trace format (trace.py).

- ``convert_swe_smith``: SWE-agent trajectories (``../shared/traces/swe-smith-5.json``), token
  counts from rendering the conversation with the serving model's chat template; tool names
  from ``tool_calls[].function.name``, durations from ``execution_time_seconds``.
- ``convert_round_csv`` / ``convert_round_jsonl`` (TraceLab's per-round replay CSV and round
  trace JSONL) live in convert_rounds.py and are re-exported here.
"""
from __future__ import annotations

import ast
import json
from pathlib import Path

from continuum.bench.convert_rounds import convert_round_csv, convert_round_jsonl  # noqa: F401 (re-export)
from continuum.bench.trace import ProgramTrace, Turn


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
