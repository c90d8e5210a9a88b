"""Seeded generators of SWE-bench-like and BFCL-like program traces (METHOD.md section 4).

Targets (the paper's table 2): turns per program, tool time (ms) over all tool calls, and
tokens per program, each as (mean, std). "Tokens per program" is read as the sum over turns
of prompt + output tokens, i.e. what an engine without a prefix cache would process; a turn's
prompt is the previous prompt + previous output + new input, so contexts grow.

How each target is met (invariants the tests check):
- turns: rounded normal (variance corrected for rounding), clipped to >= 2.
- tool durations: a per-tool mixture (fast lognormal + rare slow lognormal: a few slow calls
  carry most of a tool's time, as in the paper's `cd` example). The slow component's median is
  stretched and all durations are scaled so that the mixture's analytic mean and std equal
  the targets exactly; a sample then matches within sampling error.
- tokens: a lognormal total per program; the first prompt and per-turn outputs are drawn,
  per-turn new inputs are lognormal weights scaled so the program's total equals its draw
  (exact unless the context limit clips it).
Shape choices not in the paper (first-prompt and output sizes, tool mixes) are ours.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from continuum.bench.trace import ProgramTrace, Turn


@dataclass(frozen=True)
class ToolSpec:
    """weight; fast (median s, sigma); slow probability; slow (median s, sigma)."""
    weight: float
    fast_median: float
    fast_sigma: float
    p_slow: float = 0.0
    slow_median: float = 1.0
    slow_sigma: float = 0.5


@dataclass(frozen=True)
class WorkloadSpec:
    name: str
    turns: tuple[float, float]
    tool_ms: tuple[float, float]
    tokens: tuple[float, float]
    first_prompt_median: float
    output_median: float
    tools: dict[str, ToolSpec]
    max_context: int = 120_000


SWE_BENCH = WorkloadSpec(
    "swe-bench-like", turns=(10.9, 2.1), tool_ms=(925.0, 3550.0), tokens=(70126.0, 19732.0),
    first_prompt_median=2000, output_median=150,
    # mini-swe-agent: the tool is the first word of the bash command.
    tools={"cat": ToolSpec(.18, .05, .6, .01, 3), "grep": ToolSpec(.14, .08, .8, .02, 5),
           "sed": ToolSpec(.12, .05, .5, .005, 2), "ls": ToolSpec(.08, .04, .5, .01, 2),
           "find": ToolSpec(.08, .15, .8, .03, 5), "cd": ToolSpec(.10, .1, .8, .08, 12),
           "python": ToolSpec(.15, .4, .8, .06, 15), "pytest": ToolSpec(.05, 1.0, .7, .15, 20),
           "git": ToolSpec(.05, .06, .5, .01, 2), "echo": ToolSpec(.05, .02, .5, 0.0, 1)})

BFCL = WorkloadSpec(
    "bfcl-like", turns=(6.3, 2.3), tool_ms=(1923.0, 2133.0), tokens=(93256.0, 68687.0),
    first_prompt_median=1000, output_median=100,
    # BFCL v4 web search: a search engine call and a page fetch.
    tools={"duckduckgo_search": ToolSpec(.55, 1.2, .6, .05, 4, .6),
           "fetch_url_content": ToolSpec(.45, 1.5, .7, .08, 5, .6)})

WORKLOADS = {"swe-bench-like": SWE_BENCH, "swe": SWE_BENCH, "bfcl-like": BFCL, "bfcl": BFCL}


def _ln_moments(median: float, sigma: float) -> tuple[float, float]:
    """E[X], E[X^2] of a lognormal with the given median and sigma."""
    mu = math.log(median)
    return math.exp(mu + sigma ** 2 / 2), math.exp(2 * mu + 2 * sigma ** 2)


def _mixture_moments(tools: dict[str, ToolSpec], stretch: float) -> tuple[float, float]:
    tot = sum(t.weight for t in tools.values())
    m1 = m2 = 0.0
    for t in tools.values():
        f1, f2 = _ln_moments(t.fast_median, t.fast_sigma)
        s1, s2 = _ln_moments(t.slow_median * stretch, t.slow_sigma)
        w = t.weight / tot
        m1 += w * ((1 - t.p_slow) * f1 + t.p_slow * s1)
        m2 += w * ((1 - t.p_slow) * f2 + t.p_slow * s2)
    return m1, m2


def tool_calibration(spec: WorkloadSpec) -> tuple[float, float]:
    """(stretch of slow medians, global time scale) making the mixture's mean and std exact.

    The coefficient of variation grows monotonically with the stretch, so bisection finds it;
    if the mixture cannot reach the target CV the closest end is used.
    """
    target_cv = spec.tool_ms[1] / spec.tool_ms[0]

    def cv(stretch: float) -> float:
        m1, m2 = _mixture_moments(spec.tools, stretch)
        return math.sqrt(max(m2 - m1 * m1, 0.0)) / m1

    lo, hi = 1e-3, 1e3
    for _ in range(200):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if cv(mid) < target_cv else (lo, mid)
    stretch = math.sqrt(lo * hi)
    m1, _ = _mixture_moments(spec.tools, stretch)
    return stretch, spec.tool_ms[0] / 1e3 / m1


def _lognormal_params(mean: float, std: float) -> tuple[float, float]:
    s2 = math.log(1 + (std / mean) ** 2)
    return math.log(mean) - s2 / 2, math.sqrt(s2)


def generate(workload: str | WorkloadSpec, num_programs: int, seed: int = 0, scale: float = 1.0,
             output_scale: float | None = None, tool_time_scale: float = 1.0,
             tokens_mode: str = "sum") -> list[ProgramTrace]:
    """``num_programs`` programs (arrival_time null). ``scale`` multiplies token counts (inputs
    and, unless ``output_scale`` is given, outputs); ``tool_time_scale`` multiplies durations.
    ``tokens_mode``: "sum" (default) reads the table's tokens per program as the sum over turns
    of prompt + output tokens; "final" as the final context (prompt + output of the last turn),
    which makes contexts ~N/2 times longer (a sensitivity option: the paper does not say).
    Same arguments, same trace, on every machine (numpy PCG64)."""
    if tokens_mode not in ("sum", "final"):
        raise ValueError(f"tokens_mode must be 'sum' or 'final', got {tokens_mode!r}")
    spec = WORKLOADS[workload] if isinstance(workload, str) else workload
    out_scale = scale if output_scale is None else output_scale
    rng = np.random.default_rng(seed)
    stretch, tscale = tool_calibration(spec)
    names = list(spec.tools)
    probs = np.array([spec.tools[n].weight for n in names])
    probs /= probs.sum()
    tok_mu, tok_sigma = _lognormal_params(*spec.tokens)
    t_mean, t_std = spec.turns
    t_sd = math.sqrt(max(t_std ** 2 - 1 / 12, 0.0))
    programs = []
    for i in range(num_programs):
        n = max(2, int(round(rng.normal(t_mean, t_sd))))
        first = rng.lognormal(math.log(spec.first_prompt_median), 0.3)
        outs = rng.lognormal(math.log(spec.output_median), 0.5, size=n)
        weights = rng.lognormal(0.0, 1.0, size=n)
        weights[0] = 0.0
        total = rng.lognormal(tok_mu, tok_sigma)
        # total = sum_k (prompt_k + out_k); prompt_k = first + sum_{j<k} out_j + s * sum_{2<=j<=k} w_j
        base = n * first + sum((n - k) * outs[k] for k in range(n)) + outs.sum()
        lin = sum(weights[k] * (n - k) for k in range(n))
        if tokens_mode == "final":
            s = max((total - first - outs.sum()) / weights.sum(), 1.0)
        else:
            s = max((total - base) / lin, 1.0)
        s = min(s, max((spec.max_context - first - outs.sum()) / weights.sum(), 1.0))
        tool_idx = rng.choice(len(names), size=n, p=probs)
        slow_draw = rng.random(n)
        fast_z, slow_z = rng.standard_normal(n), rng.standard_normal(n)
        turns = []
        for k in range(n):
            inp = first if k == 0 else max(weights[k] * s, 1.0)
            last = k == n - 1
            tool, dur = None, 0.0
            if not last:
                tool = names[tool_idx[k]]
                t = spec.tools[tool]
                if slow_draw[k] < t.p_slow:
                    dur = t.slow_median * stretch * math.exp(t.slow_sigma * slow_z[k])
                else:
                    dur = t.fast_median * math.exp(t.fast_sigma * fast_z[k])
                dur *= tscale * tool_time_scale
            turns.append(Turn(max(1, int(round(inp * scale))), max(1, int(round(outs[k] * out_scale))),
                              tool, dur, last))
        programs.append(ProgramTrace(f"{spec.name.split('-')[0]}-{i:05d}", turns, None,
                                     f"gen:{spec.name} seed={seed} scale={scale}"
                                     + ("" if tokens_mode == "sum" else f" tokens={tokens_mode}")))
    return programs
