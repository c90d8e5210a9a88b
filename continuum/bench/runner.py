"""``continuum bench``: every selected policy on the same arrivals, per workload and load.

For each workload (a trace file or a generator spec) and each load (JPS, or the trace's own
arrival times), Poisson arrivals are drawn once from the seed and reused for every policy, so
policies differ only in scheduling. Targets: "sim" (simulator + profile), "engine"
(in-process LLMEngine), or an http(s) URL (policy is the server's; run once per load).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from continuum.bench.metrics import jct_values, summarize
from continuum.bench.progress import ReplayProgress
from continuum.bench.replay import assign_arrivals
from continuum.bench.report import load_label
from continuum.bench.trace import ProgramTrace, load_trace


def available_policies() -> list[str]:
    """Policy names the scheduler knows."""
    from continuum.scheduler.policies import POLICIES
    return list(POLICIES)


def load_workload(spec: str, num_programs: int | None, seed: int, scale: float,
                  tool_time_scale: float = 1.0) -> tuple[str, list[ProgramTrace]]:
    """'swe' / 'bfcl' / 'coding-agent' / 'short-agent' / 'chat' / 'mix' (generated), or a path
    to a JSONL trace (first ``num_programs``)."""
    from continuum.bench.generators import WORKLOADS, generate
    from continuum.bench.workloads import FAMILIES, rescale

    if spec in FAMILIES:
        return spec, rescale(FAMILIES[spec](num_programs or 100, seed), scale, tool_time_scale)
    if spec in WORKLOADS:
        return spec, generate(spec, num_programs or 100, seed=seed, scale=scale,
                              tool_time_scale=tool_time_scale)
    progs = load_trace(spec)
    name = spec.rsplit("/", 1)[-1].split(".")[0]
    return name, progs[:num_programs] if num_programs else progs


@dataclass
class BenchConfig:
    target: str = "sim"
    policies: list[str] = field(default_factory=lambda: ["vllm"])
    loads: list[float | None] = field(default_factory=lambda: [None])
    seed: int = 0
    profile: str | None = "h200-llama3.1-8b"
    sim: dict[str, Any] = field(default_factory=dict)        # SimConfig overrides
    engine: dict[str, Any] = field(default_factory=dict)     # EngineArgs kwargs
    model: str | None = None                                 # http: model name (default: first listed)
    client_ids: str = "all"                                  # http: http_driver.IDS
    progress: bool = True


def _one(cfg: BenchConfig, programs, arrivals, policy: str, cost, bar) -> dict[str, Any]:
    if cfg.target == "sim":
        from continuum.sim.simulator import SimConfig, simulate
        r = simulate(programs, arrivals, cost, SimConfig(policy=policy, seed=cfg.seed, **cfg.sim), bar)
        return {"programs": r.programs, "stats": r.stats, "timeline": r.timeline,
                "num_blocks": r.num_blocks, "wall_seconds": r.wall_seconds}
    if cfg.target == "engine":
        from continuum.bench.engine_driver import run_engine
        return run_engine(programs, arrivals, cfg.engine, policy, cfg.seed, cost, bar)
    if cfg.target.startswith(("http://", "https://")):
        from continuum.bench.http_driver import run_http
        return run_http(programs, arrivals, cfg.target, cfg.model, cfg.seed, progress=bar,
                        ids=cfg.client_ids)
    raise ValueError(f"unknown target {cfg.target!r}: use sim, engine or http://host:port")


def run_bench(workloads: list[tuple[str, list[ProgramTrace]]], cfg: BenchConfig,
              command: str = "") -> dict[str, Any]:
    cost = None
    if cfg.profile:
        from continuum.sim.cost_model import CostModel
        from continuum.sim.profile import load_profile
        cost = CostModel(load_profile(cfg.profile))
    elif cfg.target == "sim":
        raise ValueError("--target sim needs a --profile")
    policies = cfg.policies if not cfg.target.startswith("http") else ["server"]
    known = available_policies()
    bad = [p for p in policies if p != "server" and p not in known]
    if bad:
        raise ValueError(f"unknown policies {bad}; available now: {known}")
    runs = []
    total = sum(len(t.turns) for _, p in workloads for t in p) * len(cfg.loads) * len(policies)
    with ReplayProgress(total, enabled=cfg.progress, show_rate=cfg.target != "sim") as bar:
        for name, programs in workloads:
            for jps in cfg.loads:
                arrivals = assign_arrivals(programs, jps, cfg.seed)
                for policy in policies:
                    bar.start_run(f"{name} @ {load_label(jps)} {policy}")
                    r = _one(cfg, programs, arrivals, policy, cost, bar)
                    runs.append({"workload": name, "jps": jps, "policy": policy, "target": cfg.target,
                                 "summary": summarize(r["programs"], r["stats"]),
                                 "jcts": jct_values(r["programs"]), "stats": r["stats"],
                                 "timeline": r["timeline"], "num_blocks": r["num_blocks"],
                                 "wall_seconds": r["wall_seconds"],
                                 "records": [p.to_dict() for p in r["programs"]] if len(programs) <= 50 else None})
    return {"command": command, "config": {**cfg.__dict__, "cost_model": cost.summary() if cost else None},
            "runs": runs}
