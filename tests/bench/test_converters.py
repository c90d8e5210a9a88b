"""Converters: the real SWE-smith trajectories and TraceLab's per-round formats (replay CSV,
round-trace JSONL). The TraceLab fixtures are hand-written here after the format's documented
examples (replay/README.md, example_sessions/*/README.md); no TraceLab data is copied."""
from pathlib import Path

import pytest

import json

from continuum.bench.converters import _tool_calls, convert_round_csv, convert_round_jsonl, convert_swe_smith
from continuum.bench.trace import TraceError, load_trace, parse_lines

SWE_SMITH = Path(__file__).resolve().parents[2] / ".." / "shared" / "traces" / "swe-smith-5.json"


@pytest.mark.skipif(not SWE_SMITH.exists(), reason=f"{SWE_SMITH} absent (the shared traces folder)")
def test_swe_smith_real_trace():
    import json
    progs = convert_swe_smith(SWE_SMITH)          # byte tokenizer: offline and fast
    raw = json.loads(SWE_SMITH.read_text())
    assert len(progs) == 5
    for p, r in zip(progs, raw):
        msgs = json.loads(r["messages"])
        assistants = [m for m in msgs if m["role"] == "assistant"]
        assert len(p.turns) == len(assistants)
        assert 21 <= len(p.turns) <= 32
        assert p.turns[-1].last and p.turns[-1].tool is None
        assert {t.tool for t in p.turns[:-1]} <= {"bash", "str_replace_editor", "submit"}
        # durations come from execution_time_seconds
        expect = sum(float(c.get("execution_time_seconds") or 0) for c in _tool_calls(assistants[0]))
        assert p.turns[0].tool_duration == pytest.approx(expect)
        assert p.turns[0].input_tokens > 1000 and all(t.output_tokens >= 1 for t in p.turns)
    # the converted trace is a valid trace
    import json as j
    again = parse_lines([j.dumps(p.to_dict()) for p in progs], "converted")
    assert len(again) == 5


def _turns(p):
    return [(t.input_tokens, t.output_tokens, t.tool, round(t.tool_duration, 6), t.last) for t in p.turns]


def _csv(tmp_path, text, name="r.csv"):
    f = tmp_path / name
    f.write_text(text)
    return f


# Two sessions written in the canonical simulator form (TraceLab's csv_export column order),
# rows out of order; prefix_len = the previous round's whole context (prompt + output), so
# input_len is exactly the round's new tokens. arrival_time is in milliseconds.
CANONICAL = ("id,input_len,output_len,arrival_time,round_idx,tool_wait_after_ms,prefix_len\n"
             "1,12,3,1500.000000,2,0.000000,95\n"
             "0,100,10,0.000000,0,250.500000,0\n"
             "1,50,8,1500.000000,0,1000.000000,0\n"
             "0,20,5,0.000000,1,0.000000,110\n"
             "1,30,7,1500.000000,1,40.000000,58\n")
S0 = [(100, 10, "tool", 0.2505, False), (20, 5, None, 0.0, True)]
S1 = [(50, 8, "tool", 1.0, False), (30, 7, "tool", 0.04, False), (12, 3, None, 0.0, True)]


def test_round_csv_canonical_form_ms(tmp_path):
    a, b = convert_round_csv(_csv(tmp_path, CANONICAL))
    assert (a.program_id, a.arrival_time, b.program_id, b.arrival_time) == ("0", 0.0, "1", 1.5)
    assert _turns(a) == S0 and _turns(b) == S1
    assert a.meta == {} and b.meta == {} and a.source == "csv:r.csv"
    # a file that writes arrival_time in seconds says so
    a, b = convert_round_csv(_csv(tmp_path, CANONICAL.replace("1500.000000", "1.5")), time_unit="s")
    assert b.arrival_time == 1.5
    with pytest.raises(TraceError, match="time unit"):
        convert_round_csv(_csv(tmp_path, CANONICAL), time_unit="us")


def test_round_csv_input_len_with_previous_output(tmp_path):
    """The README's session_id header, no arrival_time column (every session arrives at 0), and
    prefix_len = the previous round's *prompt*, so input_len also counts the previous output:
    the same sessions as CANONICAL convert to the same turns. Session 'miss' reports a cache
    miss (prefix_len 0, input_len the whole prompt); 'warm' starts on a 500-token prefix."""
    f = _csv(tmp_path, "session_id,round_idx,prefix_len,input_len,output_len,tool_wait_after_ms\n"
                       "0,0,0,100,10,250.5\n0,1,100,30,5,\n"
                       "1,0,0,50,8,1000\n1,1,50,38,7,40\n1,2,88,19,3,0\n"
                       "miss,0,0,100,10,0\nmiss,1,0,130,5,0\n"
                       "warm,0,500,100,10,0\n")
    a, b, miss, warm = convert_round_csv(f)
    assert [p.arrival_time for p in (a, b, miss, warm)] == [0.0] * 4
    assert _turns(a) == S0 and _turns(b) == S1
    assert a.meta == {"input_len_with_output": 1} and b.meta == {"input_len_with_output": 2}
    assert [t.input_tokens for t in miss.turns] == [100, 20] and miss.meta == {}
    assert [t.input_tokens for t in warm.turns] == [600]


def test_round_csv_context_shrinks(tmp_path):
    """A round whose prompt is shorter than the replayed context appends 1 token; the next
    round's prompt length is matched again (1,151 replayed + 149 new = 1,300)."""
    f = _csv(tmp_path, "session_id,arrival_time,round_idx,prefix_len,input_len,output_len,tool_wait_after_ms\n"
                       "c,,0,0,1000,100,5\nc,,1,800,100,50,5\nc,,2,950,350,20,0\n")
    (c,) = convert_round_csv(f)
    assert c.arrival_time == 0.0
    assert [(t.input_tokens, t.output_tokens) for t in c.turns] == [(1000, 100), (1, 50), (149, 20)]
    assert c.meta == {"rounds_context_shrunk": 1, "max_prompt_excess": 201}


HEAD = "session_id,arrival_time,round_idx,prefix_len,input_len,output_len,tool_wait_after_ms\n"


@pytest.mark.parametrize("body, line, msg", [
    ("", 1, "empty file"),
    ("session_id,arival_time,round_idx,prefix_len,input_len,output_len,tool_wait_after_ms\n", 1,
     "unknown column.*arival_time"),
    ("session_id,round_idx,prefix_len,input_len,tool_wait_after_ms\n", 1, "missing column.*output_len"),
    ("id,session_id,round_idx,prefix_len,input_len,output_len,tool_wait_after_ms\n", 1, "both session_id and id"),
    (HEAD + "s,1,0,0,1\n", 2, "expected 7 columns"),
    (HEAD + "s,1,0,0,1,1,0\ns,1,1,0,1,zero,0\n", 3, "output_len must be an integer"),
    (HEAD + "s,-5,0,0,1,1,0\n", 2, "arrival_time must be a finite number >= 0"),
    (HEAD + "s,0,0,0,1,0,0\n", 2, "output_len must be >= 1"),
    (HEAD + ",0,0,0,1,1,0\n", 2, "empty session id"),
    (HEAD + "s,0,0,0,2,1,0\nt,0,0,0,1,1,0\ns,0,0,0,1,1,0\n", 4, "session 's' repeats round_idx 0 .first on line 2"),
])
def test_round_csv_errors(tmp_path, body, line, msg):
    f = _csv(tmp_path, body, "bad.csv")
    with pytest.raises(TraceError, match=f"bad.csv:{line}: {msg}"):
        convert_round_csv(f)


def _round(sid, idx, out, tools=(), total=None, pre=None, new=None, **extra):
    row = {"provider": sid.split(":")[0], "session_id": sid, "round_index": idx, "input_tokens_total": total,
           "prefix_tokens": pre, "newly_append_tokens": new, "output_tokens": out, "tools": list(tools)}
    row.update(extra)
    return json.dumps(row)


def _tool(name, ms, index=0):
    return {"tool_index": index, "tool_name": name, "tool_wall_latency_ms": ms, "tool_internal_latency_ms": None}


def test_round_jsonl(tmp_path):
    """Rows shaped like example_sessions/*/round_trace.jsonl (hand-written values): a Claude
    session whose first round starts on a 4,000-token cached prefix and whose third round drops
    reasoning from the history (prompt 5,650 < replayed context 5,701), and a Codex session
    that gives only input_tokens_total; rounds interleaved and out of order."""
    claude = "claude:aa"
    lines = [
        _round(claude, 1, 100, [_tool("Read", None)], 5600, 5000, 600, reasoning_output_tokens=40),
        _round("codex:bb", 1, 10, [], 500),
        _round(claude, 0, 200, [_tool("WebSearch", 1500, 1), _tool("Bash", 250, 0)], 5000, 4000, 1000,
               model="m-1", timing_events=[{"event_type": "user_message", "timestamp": "2026-01-02T03:04:05.000Z"}]),
        "",
        _round(claude, 3, 80, [_tool("Bash", -5)], 6000, 5650, 350),
        _round("codex:bb", 0, 20, [_tool("exec_command", 91), _tool("exec_command", 176, 1)], 300),
        _round(claude, 2, 30, [], 5650, 5600, 50),
    ]
    f = tmp_path / "round_trace.jsonl"
    f.write_text("\n".join(lines) + "\n")
    a, b = convert_round_jsonl(f)
    assert (a.program_id, b.program_id, a.arrival_time, b.arrival_time) == (claude, "codex:bb", None, None)
    # replayed prompts: 5000, 5200+400 = 5600, 5701 (trace: 5650), 5731+269 = 6000
    assert _turns(a) == [(5000, 200, "Bash", 1.75, False), (400, 100, "Read", 0.0, False),
                         (1, 30, None, 0.0, False), (269, 80, None, 0.0, True)]
    assert a.meta == {"provider": "claude", "model": "m-1", "start": "2026-01-02T03:04:05.000Z",
                      "rounds_context_shrunk": 1, "max_prompt_excess": 51, "tool_latency_missing": 1}
    assert _turns(b) == [(300, 20, "exec_command", 0.267, False), (180, 10, None, 0.0, True)]
    assert b.meta == {"provider": "codex"} and a.source == "round-jsonl:round_trace.jsonl"


@pytest.mark.parametrize("row, msg", [
    ("{not json", "invalid JSON"),
    ("[1, 2]", "a line must be a JSON object"),
    (_round("", 0, 1, total=5), "session_id must be a non-empty string"),
    (_round("s", 0, -1, total=5), "output_tokens must be an integer >= 0"),
    (_round("s", "0", 1, total=5), "round_index must be an integer >= 0"),
    (_round("s", 0, 1), "need input_tokens_total or prefix_tokens"),
    (_round("s", 0, 1, total=10, pre=4, new=5), "input_tokens_total 10 != prefix_tokens 4"),
    (_round("s", 0, 1, [_tool("Bash", "90")], 5), "tool_wall_latency_ms must be a number"),
    (_round("s", 0, 1, [{"tool_wall_latency_ms": 3}], 5), "tools\\[\\]\\.tool_name must be a non-empty string"),
    (_round("s", 0, 1, total=3), "session 's' repeats round_index 0 .first on line 1"),
])
def test_round_jsonl_errors(tmp_path, row, msg):
    f = tmp_path / "bad.jsonl"
    f.write_text(_round("s", 0, 1, total=5) + "\n" + row + "\n")
    with pytest.raises(TraceError, match=f"bad.jsonl:2: {msg}"):
        convert_round_jsonl(f)


def test_bench_trace_cli_converts_round_formats(tmp_path, capsys):
    from continuum.cli import main
    out = tmp_path / "csv.jsonl"
    assert main(["bench-trace", "csv", "--input", str(_csv(tmp_path, CANONICAL)), "--output", str(out)]) == 0
    progs = load_trace(out)            # the written trace passes validation
    assert [(p.program_id, p.arrival_time) for p in progs] == [("0", 0.0), ("1", 1.5)]
    assert _turns(progs[1]) == S1
    f = tmp_path / "rounds.jsonl"
    f.write_text(_round("s", 0, 20, [_tool("Bash", 500)], 300) + "\n" + _round("s", 1, 10, [], 400) + "\n")
    out = tmp_path / "rj.jsonl"
    assert main(["bench-trace", "round-jsonl", "--input", str(f), "--output", str(out)]) == 0
    assert _turns(load_trace(out)[0]) == [(300, 20, "Bash", 0.5, False), (80, 10, None, 0.0, True)]
    capsys.readouterr()
    assert main(["bench-trace", "round-jsonl"]) == 2
    assert "bench-trace round-jsonl needs --input FILE" in capsys.readouterr().err
