"""Zero-config programs over HTTP: how much of continuum+'s mean-JCT gain over vllm a client
that sends no program ids keeps on the real server.

    python benchmarks/zero_config_http.py --out benchmarks/results/zero-config-http

One generated trace (the mix of benchmarks/results/matrix-cpu: agents + chat, 24 programs,
tokens x0.05, times x0.02, at most 8 turns), Poisson arrivals at ``--jps`` drawn once, replayed
by ``continuum.bench.http_driver`` through a fresh ``continuum serve`` per run (random
llama-80m on the CPU, 32 MiB of KV, as matrix-cpu's engine runs) in these configurations
(``--configs``):

- ``vllm``: ``--scheduling-policy vllm``, the client sends everything (ids are ignored by it);
- ``ids``: continuum+, the client sends program id, turn, last-step flag and tool name;
- ``noids``: continuum+, the client sends only the tool name of a turn that calls a tool (it
  stands for the tool call a server parses from a real model's output; a random model's output
  holds none; a chat turn's ``human`` think time is no tool call and is not sent): no id, turn,
  last-step flag or header, so the server's recogniser must attach the turns;
- ``bare``: continuum+, the client sends no agent field at all (an unmodified client on a
  model that never calls tools: programs recognised, but no turn ends in a known tool call).

The box runs in wall-clock time and may be shared, so configurations are interleaved in rounds
(every configuration once per round, in the order given) and every round replays the same trace
and arrivals (``--vary-seed``: round r uses seed + r instead). Per round, ``kept`` = (vllm -
noids) / (vllm - ids) mean JCT; over rounds, its mean with a Student-t 95% interval, and the
ratio of the mean gains. No-id runs also give the server's recognition counters (/metrics) and
the recognition score of every turn (``usage.continuum.program_id`` against the trace's
programs, ``continuum.bench.zero_config.score``). Writes ``results.json`` and ``report.md``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from statistics import mean, stdev

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from server_proc import HOST, free_port, stop, wait_health  # noqa: E402
from zero_config import counters  # noqa: E402

# configuration -> (scheduling policy, what the client sends: http_driver.IDS)
CONFIGS = {"vllm": ("vllm", "all"), "ids": ("continuum+", "all"), "noids": ("continuum+", "tool"),
           "bare": ("continuum+", "none")}
# two-sided 95% Student-t quantiles by degrees of freedom (more rounds than this: the normal's)
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
       10: 2.228, 15: 2.131, 20: 2.086, 30: 2.042}
PIN_DECISION = re.compile(r"^continuum_engine_pin_decisions_(\w+)_total (\S+)$", re.M)


def t95(df: int) -> float:
    """The two-sided 95% t quantile for ``df`` degrees of freedom (the nearest tabled df below)."""
    return T95[max(k for k in T95 if k <= df)] if df < 30 else (T95[30] if df < 60 else 1.96)


def mean_ci(xs: list[float]) -> dict:
    """Mean with a Student-t 95% interval (no interval from fewer than two values)."""
    if not xs:
        return {"mean": None, "ci95": None, "n": 0}
    m = mean(xs)
    if len(xs) < 2:
        return {"mean": m, "ci95": None, "n": 1}
    h = t95(len(xs) - 1) * stdev(xs) / math.sqrt(len(xs))
    return {"mean": m, "ci95": [m - h, m + h], "n": len(xs)}


def kept_fraction(rounds: list[dict[str, float]], hidden: str = "noids") -> dict:
    """Per round (a dict configuration -> mean JCT), (vllm - hidden) / (vllm - ids); over rounds
    the mean with its 95% interval, and the ratio of the mean gains. A round whose ids gain is
    zero gives no fraction (None)."""
    per, gi, gh = [], [], []
    for r in rounds:
        g_ids, g_hid = r["vllm"] - r["ids"], r["vllm"] - r[hidden]
        gi.append(g_ids)
        gh.append(g_hid)
        per.append(g_hid / g_ids if g_ids else None)
    return {"per_round": per, **mean_ci([k for k in per if k is not None]),
            "ratio_of_mean_gains": mean(gh) / mean(gi) if gi and mean(gi) else None,
            "ids_gain_s": mean_ci(gi), "hidden_gain_s": mean_ci(gh)}


def pin_decisions(url: str) -> dict[str, float]:
    import httpx

    text = httpx.get(url + "/metrics", timeout=30).text
    return {k: float(v) for k, v in PIN_DECISION.findall(text) if float(v)}


def serve_cmd(a: argparse.Namespace, policy: str, port: int) -> list[str]:
    return [sys.executable, "-m", "continuum.cli", "serve", a.model, "--host", HOST, "--port", str(port),
            "--kv-cache-memory", a.kv_cache_memory, "--max-num-batched-tokens", "256",
            "--max-num-seqs", "16", "--scheduling-policy", policy, "--log-level", "warning"]


def run_one(a: argparse.Namespace, config: str, programs, arrivals, seed: int, log_path: Path) -> dict:
    """One configuration in its own server process: the run's summary, counters and score."""
    from continuum.bench.http_driver import run_http
    from continuum.bench.metrics import summarize
    from continuum.bench.zero_config import TurnResult, score

    policy, ids = CONFIGS[config]
    port = free_port()
    url = f"http://{HOST}:{port}"
    log = open(log_path, "w")
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads)}
    proc = subprocess.Popen(serve_cmd(a, policy, port), env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_health(url, proc, a.start_timeout)
        r = run_http(programs, arrivals, url, seed=seed, ids=ids)
        s = summarize(r["programs"], r["stats"])
        row = {"config": config, "policy": policy, "client_ids": ids, "seed": seed,
               "jct_mean": s["jct_mean"], "jct_p95": s.get("jct_p95"), "ttft_p99": s.get("ttft_p99"),
               "prefix_hit_rate": s.get("prefix_hit_rate"), "completed": s.get("completed"),
               "wall_s": round(r["wall_seconds"], 1), "pin_decisions": pin_decisions(url)}
        if ids != "all":
            row["recognition_counters"] = counters(url)
            sc = score([TurnResult(p.program_id, t.turn, t.program_id_used, True, None,
                                   t.prompt_tokens, t.cached_tokens)
                        for p in r["programs"] for t in p.turns])
            row["recognition"] = {k: sc[k] for k in ("turns", "accuracy", "continuation_accuracy",
                                                    "merges", "splits", "turns_without_program_id")}
    finally:
        stop(proc, log)
    log_path.unlink()                      # the run succeeded: its log is kept only on failure
    return row


def report_lines(res: dict) -> list[str]:
    cfgs = res["configs"]
    lines = [f"Command: `{res['command']}`", "", "| round | seed | " + " | ".join(
        f"{c} JCT s" for c in cfgs) + " | ids gain s | noids gain s | kept |", "|" + "---|" * (len(cfgs) + 5)]
    for i, r in enumerate(res["rounds"]):
        k = res["kept"]["per_round"][i] if "kept" in res else None
        gi = r["vllm"] - r["ids"] if "ids" in r and "vllm" in r else None
        gn = r["vllm"] - r["noids"] if "noids" in r and "vllm" in r else None
        lines.append(f"| {i} | {r['seed']} | " + " | ".join(f"{r[c]:.2f}" for c in cfgs)
                     + f" | {_f(gi)} | {_f(gn)} | {_f(k, 3)} |")
    for name in ("kept", "kept_bare"):
        if name in res:
            k = res[name]
            ci = k["ci95"]
            lines += ["", f"{name}: mean {_f(k['mean'], 3)}, 95% CI "
                      f"{'n/a' if ci is None else f'[{ci[0]:.3f}, {ci[1]:.3f}]'} over {k['n']} rounds; "
                      f"ratio of mean gains {_f(k['ratio_of_mean_gains'], 3)}"]
    return lines


def _f(x, d: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{d}f}"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="benchmarks/results/zero-config-http")
    p.add_argument("--workload", default="mix", help="a workload family (continuum bench-trace's: "
                   "coding-agent, short-agent, chat, mix)")
    p.add_argument("--programs", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=float, default=0.05, help="token-count scale")
    p.add_argument("--time-scale", type=float, default=0.02, help="tool/think time scale")
    p.add_argument("--max-turns", type=int, default=8)
    p.add_argument("--jps", type=float, default=2.0, help="program arrivals per second (Poisson)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--vary-seed", action="store_true", help="round r replays seed + r (default: the same trace)")
    p.add_argument("--configs", default="vllm,ids,noids", help=f"comma-separated, in run order: {','.join(CONFIGS)}")
    p.add_argument("--model", default="random:llama-80m")
    p.add_argument("--kv-cache-memory", default="32MiB")
    p.add_argument("--threads", type=int, default=1, help="OMP threads of each server")
    p.add_argument("--start-timeout", type=float, default=600.0, help="seconds a server may take to start")
    a = p.parse_args(argv)
    from continuum.bench.replay import assign_arrivals
    from continuum.bench.workloads import FAMILIES, rescale

    configs = a.configs.split(",")
    bad = [c for c in configs if c not in CONFIGS]
    if bad:
        p.error(f"unknown configs {bad}; known: {list(CONFIGS)}")
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    res = {"command": "python " + " ".join(shlex.quote(x) for x in [sys.argv[0], *(argv or sys.argv[1:])]),
           "server": " ".join(shlex.quote(x) for x in serve_cmd(a, "POLICY", 0)[1:]),
           "configs": configs, "runs": [], "rounds": []}
    for rnd in range(a.rounds):
        seed = a.seed + rnd if a.vary_seed else a.seed
        programs = rescale(FAMILIES[a.workload](a.programs, seed), a.scale, a.time_scale, a.max_turns)
        arrivals = assign_arrivals(programs, a.jps, seed)
        jct = {"seed": seed}
        for c in configs:
            t0 = time.monotonic()
            row = run_one(a, c, programs, arrivals, seed, out / f"server-{rnd}-{c}.log")
            row["round"] = rnd
            res["runs"].append(row)
            jct[c] = row["jct_mean"]
            print(f"round {rnd} {c}: mean JCT {row['jct_mean']:.2f} s, hit rate "
                  f"{row['prefix_hit_rate']:.3f}, {time.monotonic() - t0:.0f} s"
                  + (f", recognition {row['recognition']}" if "recognition" in row else ""), flush=True)
        res["rounds"].append(jct)
        if {"vllm", "ids"} <= set(configs):
            for hidden, name in (("noids", "kept"), ("bare", "kept_bare")):
                if hidden in configs:
                    res[name] = kept_fraction(res["rounds"], hidden)
        (out / "results.json").write_text(json.dumps(res, indent=2) + "\n")
    lines = report_lines(res)
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return res


if __name__ == "__main__":
    main()
