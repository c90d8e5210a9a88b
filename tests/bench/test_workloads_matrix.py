"""The scheduling matrix's workload generators (statistics they promise, determinism) and the
matrix's arithmetic (confidence intervals, sustainable load, goal verdicts), plus a tiny run."""
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from continuum.bench import workloads as w

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import matrix  # noqa: E402


def _tools(progs):
    return np.array([t.tool_duration for p in progs for t in p.turns if not t.last])


def test_generators_are_deterministic_and_well_formed():
    for name, gen in w.FAMILIES.items():
        a, b = gen(30, seed=3), gen(30, seed=3)
        assert [p.to_dict() for p in a] == [p.to_dict() for p in b], name
        assert [p.to_dict() for p in a] != [p.to_dict() for p in gen(30, seed=4)], name
        for p in a:
            assert p.turns[-1].last and not any(t.last for t in p.turns[:-1])
            assert all(t.input_tokens >= 1 and t.output_tokens >= 1 for t in p.turns)
            assert all((t.tool is None) == t.last for t in p.turns)


def test_coding_agent_statistics():
    progs = w.coding_agent(1500, seed=0)
    tools = _tools(progs)
    assert 6.5 < tools.mean() < 7.5 and 7.0 < tools.std() < 8.5 and tools.max() <= 21.0
    turns = np.array([len(p.turns) for p in progs])
    assert 9.5 < turns.mean() < 10.5
    final = np.array([p.final_context for p in progs])
    assert final.min() >= 12_900 and final.max() <= 50_100 and 22_000 < np.median(final) < 28_000


def test_chat_statistics():
    progs = w.chat(3000, seed=0)
    think = _tools(progs)
    assert 100 < np.median(think) < 140 and 180 < think.mean() < 240 and 400 < np.percentile(think, 90) < 550
    turns = np.array([len(p.turns) for p in progs])
    assert 0.45 < (turns == 1).mean() < 0.55 and 5 <= (turns > 40).sum() <= 60
    assert max(p.final_context for p in progs) <= 125_000
    assert all(t.tool == w.HUMAN for p in progs for t in p.turns if not t.last)


def test_mix_has_both_classes_and_short_agents_are_short():
    classes = {w.program_class(p.program_id) for p in w.mix(50, seed=1)}
    assert classes == {"code", "chat"}
    tools = _tools(w.short_agent(500, seed=0))
    assert 0.25 < tools.mean() < 0.35


def test_mean_ci_and_sustainable_load():
    assert matrix.mean_ci([2.0]) == (2.0, 2.0, 2.0)
    m, lo, hi = matrix.mean_ci([1.0, 2.0, 3.0])            # sd 1, t(2) = 4.30, half width 4.30/sqrt(3)
    assert m == 2.0 and hi - m == pytest.approx(4.30 / math.sqrt(3)) and m - lo == pytest.approx(hi - m)
    assert matrix.sustainable_load([(0.1, 1.0), (0.2, 1.5), (0.3, 2.5)]) == pytest.approx(0.25)
    assert matrix.sustainable_load([(0.1, 3.0)]) is None
    assert matrix.sustainable_load([(0.1, 1.0), (0.2, 1.9)]) == 0.2


def test_a_tiny_matrix_run(tmp_path):
    out = tmp_path / "mx"
    matrix.main(["--point", "short-agent:4:0.5,3", "--num-programs", "12", "--seeds", "0,1",
                 "--policies", "vllm,continuum+", "--jobs", "1", "--out", str(out)])
    r = json.loads((out / "results.json").read_text())
    assert len(r["rows"]) == 2 * 2 * 3          # loads x seeds x (unbounded + 2 policies)
    agg = {(a["policy"], a["jps"]): a for a in r["aggregates"]}
    assert agg[("vllm", 0.5)]["jct_mean_vs_vllm"] == [1.0, 1.0, 1.0]
    ci = agg[("continuum+", 3.0)]["jct_mean_vs_vllm"]
    assert len(ci) == 3 and ci[1] <= ci[0] <= ci[2]
    text = (out / "report.md").read_text()
    assert "## Goals of the default policy (`continuum+`)" in text and "short-agent, 4 GB KV" in text
    assert (out / "short-agent_4gb.png").exists()


def test_rescale_for_a_cpu_run():
    progs = w.chat(20, seed=2)
    small = w.rescale(progs, tokens=0.05, time=0.02, max_turns=3)
    for p, q in zip(progs, small):
        assert len(q.turns) == min(3, len(p.turns)) and q.turns[-1].last
        assert q.turns[-1].tool is None and q.turns[-1].tool_duration == 0.0
        for a, b in zip(p.turns[:len(q.turns) - 1], q.turns):
            assert b.input_tokens == max(1, round(a.input_tokens * 0.05))
            assert b.tool == a.tool and b.tool_duration == pytest.approx(a.tool_duration * 0.02)


def test_the_sustainable_load_goal_applies_at_each_agent_workloads_smaller_budget():
    sustain = {("swe", 10, "vllm"): 0.4, ("swe", 10, "continuum+"): 0.5,      # 1.25x: missed
               ("swe", 20, "vllm"): 0.7, ("swe", 20, "continuum+"): 0.7,      # larger budget: no goal
               ("swe", 0, matrix.UNBOUNDED): 1.4,
               ("chat", 20, "vllm"): 6.8, ("chat", 20, "continuum+"): 6.0,    # not an agent workload
               ("bfcl", 20, "vllm"): 0.156, ("bfcl", 20, "continuum+"): 0.217,
               ("bfcl", 0, matrix.UNBOUNDED): 0.24}                          # 90% of 0.24 = 0.216: held
    v = matrix.verdicts([], sustain, "continuum+")
    assert [(x["point"], x["ok"]) for x in v] == [("bfcl 20 GB", True), ("swe 10 GB", False)]


def test_a_host_tier_gives_every_policy_a_cpu_offload_of_the_evicted_kv():
    # 16 short-agent programs at 3/s in 4 GB thrash; with a host tier 4x the device blocks
    # their evicted contexts come back over the link instead of by recompute.
    job = ("short-agent", 4, 3, "vllm", 0, 16, "h200-llama3.1-8b", {})
    off, on = matrix.run_point((*job, 0.0)), matrix.run_point((*job, 4.0))
    assert on["prefix_hit_rate"] > off["prefix_hit_rate"] + 0.2
    assert on["jct_mean"] < off["jct_mean"] and on["preemptions"] < off["preemptions"]
