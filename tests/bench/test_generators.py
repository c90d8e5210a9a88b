"""Generated workloads match METHOD.md table 2 within sampling tolerance, deterministically."""
import pytest

from continuum.bench.generators import BFCL, SWE_BENCH, generate, tool_calibration, _mixture_moments
from continuum.bench.trace import trace_stats


@pytest.mark.parametrize("spec", [SWE_BENCH, BFCL])
def test_tool_mixture_is_calibrated_exactly(spec):
    stretch, scale = tool_calibration(spec)
    m1, m2 = _mixture_moments(spec.tools, stretch)
    mean, std = m1 * scale * 1e3, ((m2 - m1 * m1) ** 0.5) * scale * 1e3
    assert mean == pytest.approx(spec.tool_ms[0], rel=1e-6)
    assert std == pytest.approx(spec.tool_ms[1], rel=1e-3)


@pytest.mark.parametrize("spec, tok_tol", [(SWE_BENCH, 0.05), (BFCL, 0.15)])
def test_statistics_within_tolerance(spec, tok_tol):
    s = trace_stats(generate(spec, 2000, seed=1))
    assert s["turns_mean"] == pytest.approx(spec.turns[0], rel=0.03)
    assert s["turns_std"] == pytest.approx(spec.turns[1], rel=0.10)
    assert s["tool_ms_mean"] == pytest.approx(spec.tool_ms[0], rel=0.10)
    assert s["tool_ms_std"] == pytest.approx(spec.tool_ms[1], rel=0.20)
    assert s["tokens_mean"] == pytest.approx(spec.tokens[0], rel=0.05)
    # BFCL's long tail is clipped at the model's context: its std comes out lower.
    assert s["tokens_std"] == pytest.approx(spec.tokens[1], rel=tok_tol)


def test_seeded_and_scaled():
    a, b = generate("swe", 20, seed=3), generate("swe", 20, seed=3)
    assert [p.to_dict() for p in a] == [p.to_dict() for p in b]
    assert [p.to_dict() for p in generate("swe", 20, seed=4)] != [p.to_dict() for p in a]
    small = generate("swe", 20, seed=3, scale=0.01)
    assert sum(p.total_tokens for p in small) < 0.02 * sum(p.total_tokens for p in a)
    for p in a:
        assert p.turns[-1].last and p.turns[-1].tool is None
        assert all(t.tool in SWE_BENCH.tools for t in p.turns[:-1])
        assert p.final_context <= SWE_BENCH.max_context


def test_final_context_mode():
    s = trace_stats(generate("swe", 1000, seed=2, tokens_mode="final"))
    assert s["final_context_mean"] == pytest.approx(SWE_BENCH.tokens[0], rel=0.05)
