"""``continuum advise FILE``: replay a (recorded) trace in the simulator over a small grid of
settings and recommend one, with the expected mean-JCT / TTFT change against the current
setting.

The grid, in two parallel rounds over the cores (``jobs`` worker processes):

1. every policy of ``policies`` at the current KV size, each with the current knobs;
2. for the best of round 1 (lowest mean JCT) and the current policy the other KV sizes
   (``kv_scales`` x the current size); for the best, each main knob of ``MAIN_KNOBS`` that it
   reads, scaled by its factors (one knob at a time).

The *current* setting is the recorded server's (the trace header's ``settings``: policy,
policy knobs, batch limits) unless given, at ``kv_gb`` (default: the profile's KV capacity).
A setting is recommended over the current one only when its mean JCT is lower by more than
``margin`` (the simulator's fidelity), so noise never moves a server off its setting.

Invariants: every run replays the same programs at the same arrivals (the trace's own, or
Poisson at ``jps``) on the same cost model; a run is a pure function of its setting (the
simulator is deterministic), so the order in which the pool finishes runs changes nothing.
"""
from __future__ import annotations

import dataclasses
import math
import os
import queue as queue_mod
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from continuum.bench.trace import ProgramTrace, load_trace

# knob: factors applied to its current value in round 2 (only for policies that read it)
MAIN_KNOBS: dict[str, tuple[float, ...]] = {
    "pin_budget_fraction": (0.5, 1.5),
    "admission_target": (0.8, 1.25),
    "fixed_ttl": (0.5, 2.0),
}
# Engine knobs the simulator takes from the recorded settings (the rest describe the model).
SIM_KNOBS = ("block_size", "max_num_seqs", "max_num_batched_tokens", "enable_prefix_caching")
METRICS = ("jct_mean", "jct_p95", "ttft_p50", "ttft_p99", "prefix_hit_rate", "completed", "preemptions")


@dataclasses.dataclass(frozen=True)
class Setting:
    """One simulated configuration: a policy, a KV size and its scheduler knobs."""

    policy: str
    kv_gb: float
    knobs: tuple[tuple[str, Any], ...] = ()       # sorted (name, value): hashable

    @property
    def label(self) -> str:
        extra = "".join(f", {k}={_num(v)}" for k, v in self.knobs)
        return f"{self.policy} @ {_num(self.kv_gb)} GB{extra}"


def _num(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


# -- inputs -------------------------------------------------------------------------------
def load_traces(paths: list[str | Path]) -> list[ProgramTrace]:
    """The programs of every file (a recording's FILE, FILE.1, ...), ids kept unique: a
    clash across files gets ``@<file index>``."""
    out: list[ProgramTrace] = []
    seen: set[str] = set()
    for i, path in enumerate(paths):
        for p in load_trace(path):
            if p.program_id in seen:
                p = dataclasses.replace(p, program_id=f"{p.program_id}@{i}")
            seen.add(p.program_id)
            out.append(p)
    return out


def recorded_settings(paths: list[str | Path]) -> dict[str, Any]:
    """The serve settings in the first file's ``# continuum-record`` header ({} without)."""
    from continuum.bench.trace import read_record_header
    head = read_record_header(paths[0]) if paths else None
    return dict((head or {}).get("settings") or {})


def scheduler_knobs(settings: dict[str, Any]) -> dict[str, Any]:
    """The scheduler and policy knobs among ``settings`` (engine keyword names) that differ
    from their defaults (a recording's header lists every knob)."""
    from continuum.config import SchedulerConfig
    from continuum.scheduler.policies import policy_knobs
    names = set(policy_knobs()) | {f.name for f in dataclasses.fields(SchedulerConfig)}
    names -= {"policy", "policy_options", "max_num_seqs", "max_num_batched_tokens"}
    return {k: v for k, v in settings.items() if k in names and v is not None and v != knob_default(k)}


def reads_knob(policy: str, knob: str) -> bool:
    """Whether ``policy`` reads ``knob``: its own config's knobs, and the pin budget for a
    policy that can pin (it overrides ``on_finish``)."""
    from continuum.scheduler.policies import POLICIES
    from continuum.scheduler.policy import Policy
    cls = POLICIES[policy]
    if knob == "pin_budget_fraction":
        return cls.on_finish is not Policy.on_finish
    return cls.config_cls is not None and knob in {f.name for f in dataclasses.fields(cls.config_cls)}


def knob_default(knob: str) -> Any:
    from continuum.config import SchedulerConfig
    from continuum.scheduler.policies import policy_knobs
    if knob in policy_knobs():
        return policy_knobs()[knob].default
    return next(f.default for f in dataclasses.fields(SchedulerConfig) if f.name == knob)


# -- the grid -----------------------------------------------------------------------------
def round_one(policies: list[str], current: Setting) -> list[Setting]:
    """Every policy at the current KV size with the current knobs (the current setting too)."""
    out = [dataclasses.replace(current, policy=p) for p in policies]
    return out if current in out else [current, *out]


def knob_variants(s: Setting) -> list[Setting]:
    """``s`` with each main knob it reads scaled by that knob's factors (one at a time)."""
    base, out = dict(s.knobs), []
    for knob, factors in MAIN_KNOBS.items():
        if not reads_knob(s.policy, knob):
            continue
        now = base.get(knob, knob_default(knob))
        for f in factors:
            v = min(now * f, 1.0) if knob == "pin_budget_fraction" else now * f
            if v != now:
                out.append(dataclasses.replace(s, knobs=tuple(sorted({**base, knob: v}.items()))))
    return out


def round_two(best: Setting, current: Setting, kv_scales: list[float], knobs: bool) -> list[Setting]:
    """The other KV sizes for the best and the current policies (the recommendation is one of
    them), and the main knobs of the best one."""
    out: list[Setting] = []
    for s in dict.fromkeys([best, current]):
        out += [dataclasses.replace(s, kv_gb=round(current.kv_gb * f, 3)) for f in kv_scales]
    if knobs:
        out += knob_variants(best)
    return list(dict.fromkeys(x for x in out if x not in (best, current)))


# -- running (in this process or in pool workers) -------------------------------------------
_W: dict[str, Any] = {}          # per process: programs, arrivals, cost model, sim settings, queue


def _init(programs, arrivals, profile: dict, sim: dict, relay) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from continuum.sim.cost_model import CostModel
    _W.update(programs=programs, arrivals=arrivals, cost=CostModel(profile), sim=sim, relay=relay)


class _Relay:
    """A worker's progress: finished turns sent to the parent in batches (one queue put per
    ``every`` turns, and the rest when the run ends)."""

    def __init__(self, q, every: int = 256):
        self.q, self.every, self.n = q, every, 0

    def turn_done(self, output_tokens: int) -> None:
        self.n += 1
        if self.n >= self.every:
            self.flush()

    def tick(self) -> None:
        pass

    def flush(self) -> None:
        if self.n:
            self.q.put(self.n)
            self.n = 0


def run_setting(s: Setting, progress=None) -> dict[str, Any]:
    """Simulate ``s`` on this process's programs; a row of metrics."""
    from continuum.bench.metrics import summarize
    from continuum.config import SchedulerConfig
    from continuum.sim.simulator import SimConfig, simulate

    cost, sim = _W["cost"], _W["sim"]
    relay = _Relay(_W["relay"]) if progress is None and _W.get("relay") is not None else None
    blocks = max(int(s.kv_gb * 1e9 // (cost.bytes_per_token * sim["block_size"])), 1)
    t0 = time.perf_counter()
    cfg = SimConfig(policy=s.policy, num_blocks=blocks,
                    scheduler=SchedulerConfig.from_kwargs(**dict(s.knobs)), **sim)
    r = simulate(_W["programs"], _W["arrivals"], cost, cfg, progress or relay)
    if relay is not None:
        relay.flush()
    summary = summarize(r.programs, r.stats)
    return {"setting": s, "policy": s.policy, "kv_gb": s.kv_gb, "knobs": dict(s.knobs), "label": s.label,
            **{k: summary.get(k) for k in METRICS}, "turns_simulated": summary["turns"],
            "wall_s": round(time.perf_counter() - t0, 2)}


def _safe_run(s: Setting, progress=None) -> dict[str, Any]:
    """``run_setting``, with a KV size too small for the trace's largest turn as a row."""
    from continuum.bench.replay import KVTooSmallError
    try:
        return run_setting(s, progress)
    except KVTooSmallError as e:
        return {"setting": s, "policy": s.policy, "kv_gb": s.kv_gb, "knobs": dict(s.knobs),
                "label": s.label, **{k: None for k in METRICS}, "error": str(e), "turns_simulated": 0,
                "wall_s": 0.0}


class Runner:
    """Runs settings over ``jobs`` processes (in this one for ``jobs == 1``), feeding one
    progress bar (``continuum.bench.progress.ReplayProgress``) in turns."""

    def __init__(self, programs, arrivals, profile: dict, sim: dict, jobs: int, bar):
        self.turns = sum(len(p.turns) for p in programs)
        self.jobs, self.bar = jobs, bar
        if jobs == 1:
            _init(programs, arrivals, profile, sim, None)
            self.pool = self.q = None
        else:
            import multiprocessing as mp
            self.q = mp.get_context("spawn").Queue()
            self.pool = ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn"), initializer=_init,
                                            initargs=(programs, arrivals, profile, sim, self.q))

    def run(self, settings: list[Setting], label: str) -> list[dict[str, Any]]:
        self.bar.add_total(self.turns * len(settings))
        self.bar.start_run(f"{label}: {len(settings)} settings")
        if self.pool is None:
            return [_safe_run(s, self.bar) for s in settings]
        pending: set[Future] = {self.pool.submit(_safe_run, s) for s in settings}
        rows = []
        while pending:
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            self._drain()
            rows += [f.result() for f in done]
        self._drain()        # the bar only: a worker's last batch may still be in the queue's pipe
        order = {s: i for i, s in enumerate(settings)}
        return sorted(rows, key=lambda r: order[r["setting"]])

    def _drain(self) -> None:
        while True:
            try:
                self.bar.turns_done(self.q.get_nowait())
            except queue_mod.Empty:
                return

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


# -- the recommendation --------------------------------------------------------------------
def _change(new: float | None, old: float | None) -> float | None:
    """Relative change new vs old (-0.25: 25% lower); None when either is missing."""
    if new is None or old is None or not old:
        return None
    return new / old - 1.0


def _ok(row: dict, n: int) -> bool:
    return row.get("jct_mean") is not None and row.get("completed") == n


def recommend(rows: list[dict], current: Setting, n_programs: int, margin: float) -> dict[str, Any]:
    """The setting to run at the current KV size (the current one unless another lowers mean
    JCT by more than ``margin``), its change vs the current, and what other KV sizes give."""
    cur = next(r for r in rows if r["setting"] == current)
    same_kv = [r for r in rows if r["kv_gb"] == current.kv_gb and _ok(r, n_programs)]
    best = min(same_kv, key=lambda r: r["jct_mean"]) if same_kv else cur
    if not _ok(cur, n_programs):
        pick = best                             # the current setting cannot even run the trace
    else:
        pick = best if best["jct_mean"] < cur["jct_mean"] * (1 - margin) else cur
    change = {k: _change(pick[k], cur[k]) for k in ("jct_mean", "jct_p95", "ttft_p50", "ttft_p99")}
    kv = []
    for r in rows:
        s: Setting = r["setting"]
        if s.kv_gb != current.kv_gb and s.knobs == pick["setting"].knobs and s.policy == pick["policy"]:
            kv.append({"kv_gb": s.kv_gb, "policy": s.policy, "jct_mean": r["jct_mean"],
                       "ttft_p99": r["ttft_p99"], "jct_change": _change(r["jct_mean"], cur["jct_mean"]),
                       "error": r.get("error")})
    kv.sort(key=lambda d: d["kv_gb"])
    return {"current": _public(cur), "recommended": _public(pick), "keep_current": pick is cur,
            "best_at_current_kv": _public(best), "change_vs_current": change, "kv_sizes": kv}


def _public(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "setting"}


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:+.1f}%"


def _s(x: float | None) -> str:
    from continuum.bench.report import fmt_sig
    return "-" if x is None else f"{fmt_sig(x)} s"


def summary_text(rec: dict, rows: list[dict], header: str) -> str:
    """The short report: the table at the current KV size, then the recommendation."""
    cur, pick, ch = rec["current"], rec["recommended"], rec["change_vs_current"]
    lines = [header, "", f"{'setting':<52} {'mean JCT':>10} {'vs current':>10} {'TTFT P50':>10} "
                         f"{'TTFT P99':>10}"]
    by_kv_then_jct = lambda r: (r["kv_gb"], r["jct_mean"] if r["jct_mean"] is not None else math.inf)  # noqa: E731
    for r in sorted(rows, key=by_kv_then_jct):
        mark = " (current)" if r["label"] == cur["label"] else ""
        lines.append(f"{(r['label'] + mark)[:52]:<52} {_s(r['jct_mean']):>10} "
                     f"{_pct(_change(r['jct_mean'], cur['jct_mean'])):>10} {_s(r['ttft_p50']):>10} "
                     f"{_s(r['ttft_p99']):>10}" + (f"  [{r['error'][:60]}]" if r.get("error") else ""))
    lines.append("")
    if cur.get("error"):
        lines.append(f"The current setting cannot run this trace: {cur['error']}")
    if rec["keep_current"]:
        best = rec["best_at_current_kv"]
        lines.append(f"Recommendation: keep {cur['label']} (policy {cur['policy']}): no setting at this KV "
                     f"size lowers mean JCT by more than the margin (best: {best['label']}, "
                     f"{_pct(_change(best['jct_mean'], cur['jct_mean']))}).")
    else:
        lines.append(f"Recommendation: policy {pick['policy']} ({pick['label']}): mean JCT "
                     f"{_s(cur['jct_mean'])} -> {_s(pick['jct_mean'])} ({_pct(ch['jct_mean'])}), "
                     f"TTFT P50 {_pct(ch['ttft_p50'])}, TTFT P99 {_s(cur['ttft_p99'])} -> "
                     f"{_s(pick['ttft_p99'])} ({_pct(ch['ttft_p99'])}) vs the current {cur['label']}.")
    for k in rec["kv_sizes"]:
        lines.append(f"  with {_num(k['kv_gb'])} GB of KV: mean JCT {_s(k['jct_mean'])} "
                     f"({_pct(k['jct_change'])} vs current)" + (" [does not fit]" if k["error"] else ""))
    return "\n".join(lines)


def advise_figure(rows: list[dict], rec: dict):
    """Left: mean JCT of every setting at the current KV size (current and recommended
    marked). Right: mean JCT against KV size for the policies run at several sizes."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from continuum.bench.plots import policy_colors
    cur_kv = rec["current"]["kv_gb"]
    colors = policy_colors(list(dict.fromkeys(r["policy"] for r in rows)))
    cur_jct = rec["current"]["jct_mean"]
    same = sorted((r for r in rows if r["kv_gb"] == cur_kv and r["jct_mean"] is not None),
                  key=lambda r: r["jct_mean"], reverse=True)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(14, max(3.5, 0.35 * len(same) + 1.5)),
                                 gridspec_kw={"width_ratios": (3, 2)})
    rel = [100 * (_change(r["jct_mean"], cur_jct) or 0.0) for r in same]
    ax.barh(range(len(same)), rel, color=[colors[r["policy"]] for r in same])
    ax.set_yticks(range(len(same)))
    names = []
    for i, r in enumerate(same):
        tag = " [current]" if r["label"] == rec["current"]["label"] else ""
        if r["label"] == rec["recommended"]["label"] and not rec["keep_current"]:
            tag += " [recommended]"
        names.append(r["label"].split(" @ ")[0] + r["label"].split(" GB")[1] + tag)
        ax.text(rel[i], i, f" {r['jct_mean']:.4g} s ", va="center", fontsize=7,
                ha="left" if rel[i] >= 0 else "right")
    ax.set_yticklabels(names, fontsize=7)
    ax.margins(x=0.25)
    ax.axvline(0, color="black", lw=.8)
    ax.set(xlabel="mean JCT vs current (%)", title=f"settings at {_num(cur_kv)} GB KV")
    ax.grid(axis="x", alpha=.3)
    for pol in colors:
        pts = sorted((r["kv_gb"], r["jct_mean"]) for r in rows
                     if r["policy"] == pol and not r["knobs_changed"] and r["jct_mean"] is not None)
        if len({p[0] for p in pts}) > 1:
            bx.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color=colors[pol], label=pol)
    bx.axvline(cur_kv, color="grey", ls=":", lw=1)
    bx.set(xlabel="KV cache (GB)", ylabel="mean JCT (s)", title="mean JCT vs KV size")
    if bx.get_legend_handles_labels()[0]:
        bx.legend(fontsize=8)
    bx.grid(alpha=.3)
    return fig


# -- the whole job ------------------------------------------------------------------------
@dataclasses.dataclass
class AdviseConfig:
    profile: str = "h200-llama3.1-8b"
    policies: list[str] | None = None           # None: every registered policy
    current_policy: str | None = None           # None: the recorded one, else the default
    kv_gb: float | None = None                  # None: the profile's KV capacity
    kv_scales: tuple[float, ...] = (0.5, 2.0)
    knobs: bool = True
    jps: float | None = None                    # None: the trace's arrival times
    seed: int = 0
    jobs: int = 0                               # 0: every core
    margin: float = 0.02
    progress: bool = True


def advise(paths: list[str | Path], cfg: AdviseConfig, out: Path | None = None) -> dict[str, Any]:
    """Run the grid on the trace files ``paths``; returns (and with ``out`` writes
    ``advise.json`` and ``advise.png`` there) the rows and the recommendation."""
    from continuum.bench.progress import ReplayProgress
    from continuum.bench.replay import assign_arrivals
    from continuum.config import SchedulerConfig
    from continuum.scheduler.policies import POLICIES
    from continuum.sim.cost_model import CostModel
    from continuum.sim.profile import load_profile

    t0 = time.perf_counter()
    programs = load_traces(paths)
    arrivals = assign_arrivals(programs, cfg.jps, cfg.seed)
    settings = recorded_settings(paths)
    profile = load_profile(cfg.profile)
    cost = CostModel(profile)
    policies = cfg.policies or list(POLICIES)
    cur_policy = cfg.current_policy or settings.get("scheduling_policy") or SchedulerConfig.policy
    unknown = [p for p in [*policies, cur_policy] if p not in POLICIES]
    if unknown:
        raise ValueError(f"unknown policies {unknown}; known: {list(POLICIES)}")
    kv_gb = cfg.kv_gb or round(cost.kv_capacity_tokens() * cost.bytes_per_token / 1e9, 3)
    current = Setting(cur_policy, kv_gb, tuple(sorted(scheduler_knobs(settings).items())))
    sim = {k: settings[k] for k in SIM_KNOBS if settings.get(k) is not None}
    sim.setdefault("block_size", 16)
    jobs = cfg.jobs or os.cpu_count() or 1
    with ReplayProgress(0, enabled=cfg.progress, show_rate=False) as bar:
        runner = Runner(programs, arrivals, profile, sim, jobs, bar)
        try:
            rows = runner.run(round_one(policies, current), "round 1 (policies)")
            done = [r for r in rows if _ok(r, len(programs))]
            best = min(done, key=lambda r: r["jct_mean"])["setting"] if done else current
            rows += runner.run(round_two(best, current, list(cfg.kv_scales), cfg.knobs),
                               "round 2 (KV sizes, knobs)")
        finally:
            runner.close()
    simulated = sum(r["turns_simulated"] for r in rows)     # counted by the runs themselves
    base_knobs = dict(current.knobs)
    for r in rows:
        r["knobs_changed"] = r["knobs"] != base_knobs
    rec = recommend(rows, current, len(programs), cfg.margin)
    turns = sum(len(p.turns) for p in programs)
    head = (f"advise: {len(programs)} programs ({turns} turns) from {', '.join(map(str, paths))}; "
            f"simulated on {profile.get('name', cfg.profile)}; arrivals: "
            f"{'the trace' if cfg.jps is None else f'Poisson {cfg.jps:g}/s'}; current: {current.label}")
    text = summary_text(rec, rows, head)
    result = {"traces": [str(p) for p in paths], "profile": cfg.profile, "programs": len(programs),
              "turns": turns, "config": {**dataclasses.asdict(cfg), "jobs": jobs},
              "recorded_settings": settings, "current": current.label,
              "rows": [_public(r) for r in rows], "recommendation": rec, "text": text,
              "turns_simulated": simulated,
              "wall_seconds": round(time.perf_counter() - t0, 1)}
    if out is not None:
        import json

        from continuum.bench.plots import _save
        out.mkdir(parents=True, exist_ok=True)
        result["plot"] = str(_save(advise_figure(rows, rec), out / "advise.png"))
        (out / "advise.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    return result
