"""Trace schema: round trip, and validation errors that name the line."""
import json

import pytest

from continuum.bench.trace import ProgramTrace, TraceError, Turn, load_trace, parse_lines, save_trace

GOOD = {"program_id": "p1", "arrival_time": None, "source": "t",
        "turns": [{"input_tokens": 10, "output_tokens": 3, "tool": "ls", "tool_duration": 0.5},
                  {"input_tokens": 4, "output_tokens": 2, "tool": None, "tool_duration": 0, "last": True}]}


def _lines(*objs):
    return [json.dumps(o) if not isinstance(o, str) else o for o in objs]


def test_round_trip(tmp_path):
    p = ProgramTrace("a", [Turn(5, 2, "grep", 1.25), Turn(3, 1, None, 0.0, True)], 2.0, "x")
    path = tmp_path / "t.jsonl"
    save_trace([p], path, header="regenerate: something")
    [q] = load_trace(path)
    assert q.to_dict() == p.to_dict()
    assert q.total_tokens == 5 + 2 + (5 + 2 + 3) + 1 and q.final_context == 11


@pytest.mark.parametrize("bad, line, msg", [
    ("{not json", 2, "invalid JSON"),
    ({**GOOD, "program_id": ""}, 2, "program_id"),
    ({**GOOD, "turns": []}, 2, "non-empty"),
    ({**GOOD, "turns": [{**GOOD["turns"][0], "input_tokens": 0}, GOOD["turns"][1]]}, 2, "input_tokens"),
    ({**GOOD, "turns": [{**GOOD["turns"][0], "tool_duration": -1}, GOOD["turns"][1]]}, 2, "tool_duration"),
    ({**GOOD, "turns": [{**GOOD["turns"][0], "last": True}, GOOD["turns"][1]]}, 2, "last"),
    ({**GOOD, "turns": [{**GOOD["turns"][0], "bogus": 1}, GOOD["turns"][1]]}, 2, "unknown turn field"),
    ({**GOOD, "arrival_time": -3}, 2, "arrival_time"),
    (GOOD, 2, "duplicate program_id"),
])
def test_errors_name_the_line(bad, line, msg):
    lines = _lines(GOOD, bad) if bad is not GOOD else _lines(GOOD, GOOD)
    with pytest.raises(TraceError) as e:
        parse_lines(lines, "f.jsonl")
    assert f"f.jsonl:{line}:" in str(e.value) and msg in str(e.value)


def test_comments_and_blank_lines_skipped():
    progs = parse_lines(["# header", "", json.dumps(GOOD)], "f")
    assert [p.program_id for p in progs] == ["p1"]


def test_empty_trace_rejected():
    with pytest.raises(TraceError, match="no programs"):
        parse_lines(["# only a comment"], "f")
