"""benchmarks/zero_config_http.py at toy size through real servers (random tiny model): what the
client sends without ids, the recognition of every turn, and the kept-fraction arithmetic."""
import sys
from pathlib import Path

import pytest

from continuum.bench.http_driver import agent_fields
from continuum.bench.replay import ProgramState
from continuum.bench.replayer import turn_send
from continuum.bench.trace import ProgramTrace, Turn

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import zero_config_http  # noqa: E402


def _send(tool: str = "ls"):
    st = ProgramState(ProgramTrace("p", [Turn(20, 4, tool, 0.1), Turn(9, 3, None, 0.0, True)]),
                      0, 0.0, 0, (0, 256))
    return turn_send(st, 0.0)


def test_the_client_without_ids_sends_only_the_tool_name_or_nothing():
    ext, headers = agent_fields(_send(), "all")
    assert ext == {"program_id": "p", "is_last_step": False, "tool_name": "ls", "turn": 0}
    assert headers == {"X-Program-Id": "p"}
    assert agent_fields(_send(), "tool") == ({"tool_name": "ls"}, {})
    assert agent_fields(_send(), "none") == ({}, {})
    # a person's think time is no tool call: a server could not parse it from the output
    assert agent_fields(_send("human"), "tool") == ({}, {})
    assert agent_fields(_send("human"), "all")[0]["tool_name"] == "human"
    with pytest.raises(ValueError, match="ids must be one of"):
        agent_fields(_send(), "some")


def test_kept_fraction_per_round_and_over_rounds():
    rounds = [{"vllm": 10.0, "ids": 6.0, "noids": 7.0}, {"vllm": 12.0, "ids": 8.0, "noids": 8.0},
              {"vllm": 9.0, "ids": 9.0, "noids": 8.0}]
    k = zero_config_http.kept_fraction(rounds)
    assert k["per_round"] == [0.75, 1.0, None]           # no ids gain: no fraction
    assert k["n"] == 2 and k["mean"] == pytest.approx(0.875)
    lo, hi = k["ci95"]
    assert lo < 0.875 < hi and hi - 0.875 == pytest.approx(12.706 * 0.125)   # t(1) * s / sqrt(2), s = 0.25 / sqrt(2)
    assert k["ratio_of_mean_gains"] == pytest.approx((3 + 4 + 1) / (4 + 4 + 0))


def test_toy_run_recognises_every_turn_without_ids(tmp_path):
    res = zero_config_http.main([
        "--out", str(tmp_path), "--model", "random:tiny", "--kv-cache-memory", "4MiB",
        "--programs", "3", "--rounds", "1", "--jps", "5", "--scale", "0.02", "--time-scale", "0.001",
        "--configs", "vllm,ids,noids"])
    runs = {r["config"]: r for r in res["runs"]}
    assert set(runs) == {"vllm", "ids", "noids"} and all(r["completed"] == 3 for r in runs.values())
    rec = runs["noids"]["recognition"]
    assert rec["accuracy"] == 1.0 and rec["merges"] == 0 and rec["splits"] == 0
    assert runs["noids"]["recognition_counters"]["programs_inferred_total"] == 3
    assert "recognition" not in runs["ids"]
    assert len(res["kept"]["per_round"]) == 1 and (tmp_path / "report.md").exists()
