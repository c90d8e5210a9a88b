"""Converters: the real SWE-smith trajectories and the per-round replay CSV."""
from pathlib import Path

import pytest

from continuum.bench.converters import _tool_calls, convert_round_csv, convert_swe_smith
from continuum.bench.trace import TraceError, parse_lines

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


def test_round_csv(tmp_path):
    f = tmp_path / "r.csv"
    f.write_text("session_id,arrival_time,round_idx,prefix_len,input_len,output_len,tool_wait_after_ms\n"
                 "b,12.0,0,0,100,10,500\n"
                 "a,10.0,1,110,20,5,0\n"
                 "a,10.0,0,0,100,10,250\n"
                 "b,12.0,1,50,30,7,0\n")
    a, b = convert_round_csv(f)
    assert (a.program_id, a.arrival_time, b.arrival_time) == ("a", 0.0, 2.0)
    assert [(t.input_tokens, t.output_tokens, t.tool_duration, t.last) for t in a.turns] == \
        [(100, 10, 0.25, False), (20, 5, 0.0, True)]
    assert not a.meta and b.meta == {"prefix_mismatch": 1}


@pytest.mark.parametrize("body, line", [
    ("x,1,0,0,1,1,0\n", 1),
    ("session_id,arrival_time,round_idx,prefix_len,input_len,output_len,tool_wait_after_ms\ns,1,0,0,1\n", 2),
    ("session_id,arrival_time,round_idx,prefix_len,input_len,output_len,tool_wait_after_ms\n"
     "s,1,0,0,1,1,0\ns,1,1,0,1,zero,0\n", 3),
])
def test_round_csv_errors(tmp_path, body, line):
    f = tmp_path / "bad.csv"
    f.write_text(body)
    with pytest.raises(TraceError, match=f"bad.csv:{line}:"):
        convert_round_csv(f)
